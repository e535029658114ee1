"""Videos: emoji objects on a photo crop that appear, disappear, move and change colour, encoded as mp4.

Times are exact by construction: frame i is encoded with pts i at time base 1/fps, so it is shown
during [i/fps, (i+1)/fps) and the clip lasts num_frames/fps. An event over frames [f1, f2) has the
span [f1/fps, f2/fps] seconds:
  visible   the object is drawn in frames [f1, f2) and in no other frame
  move      the object is at p0 up to frame f1, at p1 from frame f2 on (f2 < num_frames: the clip
            shows it arrive), linearly between
  colour    the object is tinted `colour` in frames [f1, f2) and has its own colours otherwise (never
            that colour: assets.natural_colours)
Every object of a clip is a different category, its swept area (start and end box) overlaps no
other object's, and a queried event lasts 15..70% of the clip (so its span text, two decimals of
the duration, still matches the label; see schema.SPAN_MATCH_IOU).

Tasks per stage: 1 a caption of the events in time order; 2 one event query -> span; 3 a dialogue
asking for every event, some the other way round (span given, event asked) where no other event
overlaps it much.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from omniground.data import instruct
from omniground.data.schema import Media, Sample, SpanLabel
from omniground.data.synth import assets
from omniground.data.synth.common import HELD_OUT, choice, media_path, pick_stage, record, text_rng, weighted
from omniground.data.synth.images import image_size, random_background
from omniground.files import atomic_output
from omniground.grounding import Span, span_iou

EVENT_SHARE = (0.15, 0.7)  # a queried event's length as a share of the clip
EVENT_WEIGHTS = {"visible": 0.4, "move": 0.35, "colour": 0.25}
ALPHA_OPAQUE = 128


@dataclass
class Track:
    name: str
    size: int  # longest side, pixels
    colour: str | None  # own tint (None: the glyph's colours)
    p0: tuple[int, int]  # top-left at the start
    p1: tuple[int, int]  # top-left after moving (== p0 if it never moves)
    visible: tuple[int, int]  # frames [a, b)
    move: tuple[int, int] | None = None  # frames [f1, f2] of the motion
    recolour: tuple[int, int, str] | None = None  # frames [f1, f2) tinted with this colour

    def position(self, i: int) -> tuple[int, int]:
        if self.move is None or i <= self.move[0]:
            return self.p0
        if i >= self.move[1]:
            return self.p1
        t = (i - self.move[0]) / (self.move[1] - self.move[0])
        return (round(self.p0[0] + t * (self.p1[0] - self.p0[0])), round(self.p0[1] + t * (self.p1[1] - self.p0[1])))

    def colour_at(self, i: int) -> str | None:
        if self.recolour and self.recolour[0] <= i < self.recolour[1]:
            return self.recolour[2]
        return self.colour

    def is_visible(self, i: int) -> bool:
        return self.visible[0] <= i < self.visible[1]


def _sprite(name: str, colour: str | None, size: int) -> Image.Image:
    im = assets.tint(assets.object_sprite(name), colour)
    w, h = im.size
    s = size / max(w, h)
    return im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)


def _direction(track: Track) -> str:
    dx, dy = track.p1[0] - track.p0[0], track.p1[1] - track.p0[1]
    if abs(dx) >= abs(dy):
        return "to the right" if dx > 0 else "to the left"
    return "down" if dy > 0 else "up"


def event_clause(track: Track, kind: str) -> str:
    name = f"the {track.colour} {track.name}" if track.colour else f"the {track.name}"
    if kind == "visible":
        return f"{name} is visible"
    if kind == "move":
        return f"{name} moves {_direction(track)}"
    return f"the {track.name} is {track.recolour[2]}"


def _event_frames(rng: np.random.Generator, n: int) -> tuple[int, int]:
    lo, hi = max(2, math.ceil(EVENT_SHARE[0] * n)), max(2, math.floor(EVENT_SHARE[1] * n))
    length = int(rng.integers(lo, hi + 1))
    start = int(rng.integers(0, n - length + 1))
    return start, start + length


def _swept(t: Track, w: int, h: int) -> tuple[int, int, int, int]:
    return (min(t.p0[0], t.p1[0]), min(t.p0[1], t.p1[1]), max(t.p0[0], t.p1[0]) + w, max(t.p0[1], t.p1[1]) + h)


def _overlap(a, b, margin: int = 2) -> bool:
    return a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin and b[1] < a[3] + margin


def plan_clip(rng: np.random.Generator, cfg, unseen: bool, busy: bool = False):
    """(width, height, fps, n_frames, background, tracks, (kind, target index, f1, f2)) or None to re-plan.

    busy: more objects with events of their own (material for a multi-turn dialogue).
    """
    width, height = image_size(rng, cfg.video_size)
    width, height = width - width % 2, height - height % 2  # yuv420p needs even sizes
    fps = choice(rng, cfg.fps)
    n = max(8, round(float(rng.uniform(*cfg.video_seconds)) * fps))
    bg = random_background(rng)
    excluded = set(assets.BACKGROUND_BY_FILE[bg["file"]].contains)
    pool = [o.name for o in assets.OBJECTS if o.name not in excluded]
    kind = "move" if unseen else weighted(rng, EVENT_WEIGHTS)
    if unseen:
        target_name = choice(rng, sorted(HELD_OUT.moving_objects - excluded))
    else:
        target_name = choice(rng, [p for p in pool if p not in HELD_OUT.moving_objects or kind != "move"])
    others = [p for p in pool if p != target_name]
    n_others = int(rng.integers(1, 3)) if busy else int(rng.integers(0, 3))
    names = [target_name] + [others[int(i)] for i in rng.permutation(len(others))[:n_others]]
    other_events = {"none": 0.2 if busy else 0.5, "visible": 0.2, "move": 0.2, "colour": 0.1}

    tracks = []
    for k, name in enumerate(names):
        size = round(min(width, height) * float(rng.uniform(0.2, 0.34)))
        sw, sh = _sprite(name, None, size).size
        p0 = (int(rng.integers(0, width - sw + 1)), int(rng.integers(0, height - sh + 1)))
        track = Track(name, size, None if rng.random() < 0.6 else choice(rng, list(assets.COLOURS)), p0, p0, (0, n))
        own = kind if k == 0 else weighted(rng, other_events)
        if own == "move" and name in HELD_OUT.moving_objects and not unseen:
            own = "none"
        if own != "none":
            f1, f2 = _event_frames(rng, n)
            if own == "visible":
                track.visible = (f1, f2)
            elif own == "move":
                if f2 == n:  # arrive in the last frame at the latest, so the clip shows the end of the motion
                    f1, f2 = f1 - 1, f2 - 1
                track.move = (f1, f2)
                track.p1 = (int(rng.integers(0, width - sw + 1)), int(rng.integers(0, height - sh + 1)))
                if abs(track.p1[0] - p0[0]) + abs(track.p1[1] - p0[1]) < size // 2:
                    return None  # too small a motion to see
            else:
                # A colour it does not already show, so the clause is true only in the event's frames.
                own_colours = assets.looks(name, track.colour)
                track.recolour = (f1, f2, choice(rng, [c for c in assets.COLOURS if c not in own_colours]))
        if any(_overlap(_swept(track, sw, sh), _swept(t, *_sprite(t.name, None, t.size).size)) for t in tracks):
            if k == 0:
                return None
            continue
        tracks.append(track)
    t0 = tracks[0]
    f1, f2 = {"visible": t0.visible, "move": t0.move, "colour": t0.recolour[:2] if t0.recolour else None}[kind]
    return width, height, fps, n, bg, tracks, (kind, 0, f1, f2)


def render_frames(width: int, height: int, n: int, bg: dict, tracks: list[Track]):
    """Yield the clip's frames, (H, W, 3) uint8 each."""
    base = assets.background(bg["file"], tuple(bg["crop"]), (width, height), bg["flip"]).convert("RGBA")
    cache: dict[tuple[str, str | None], tuple[Image.Image, Image.Image]] = {}
    for i in range(n):
        frame = base.copy()
        for t in tracks:
            if not t.is_visible(i):
                continue
            key = (t.name, t.colour_at(i))
            if key not in cache:
                sp = _sprite(t.name, key[1], t.size)
                cache[key] = (sp, Image.fromarray((np.asarray(sp)[..., 3] >= ALPHA_OPAQUE).astype(np.uint8) * 255))
            sp, mask = cache[key]
            frame.paste(sp, t.position(i), mask)
        yield np.asarray(frame.convert("RGB"))


def encode_mp4(path: Path, frames, width: int, height: int, fps: int) -> None:
    """H.264 in mp4, frame i at pts i / fps. One encoder thread, bitexact flags and x264 without its assembly
    (`asm=0`) keep the bytes reproducible. With the assembly (any of it, MMX2 alone too) 1 to 3 clips in 100
    (64x36 and 48x64 ones) came out different from one run to the next, their frames alike: what x264 wrote
    depended on memory the run had left behind. Without it, none of 300 clips encoded six times each
    (tests/test_synth.py). It costs time: 64 px clips 146 -> 113 a second, the generator's default 160 px ones
    27 -> 14 (benchmarks/bench_synth.py)."""
    import av

    with av.open(str(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.thread_count = 1
        stream.codec_context.options = {"crf": "23", "preset": "veryfast", "threads": "1", "flags": "+bitexact",
                                        "x264-params": "asm=0"}
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def events(tracks: list[Track], n: int) -> list[tuple[int, str, int, int]]:
    """Every event of a clip as (track index, kind, first frame, end frame)."""
    out = []
    for k, t in enumerate(tracks):
        if t.visible != (0, n):
            out.append((k, "visible", *t.visible))
        if t.move is not None:
            out.append((k, "move", *t.move))
        if t.recolour is not None:
            out.append((k, "colour", *t.recolour[:2]))
    return out


def _article(words: str) -> str:
    return ("an " if words[:1] in "aeiou" else "a ") + words


def clip_caption(tracks: list[Track], n: int, bg: dict) -> str:
    """'A video of grass in which a cat moves to the left, then a red dog appears.' Events in time order."""
    happenings = []
    for t in tracks:
        who = _article(f"{t.colour} {t.name}" if t.colour else t.name)
        if t.visible != (0, n):
            a, b = t.visible
            what = "appears and later disappears" if a > 0 and b < n else ("disappears" if a == 0 else "appears")
            happenings.append((a if a > 0 else b, f"{who} {what}"))
        elif t.move is not None:
            happenings.append((t.move[0], f"{who} moves {_direction(t)}"))
        elif t.recolour is not None:
            a, b, colour = t.recolour
            happenings.append((a, f"{who} turns {colour}" + (" for a while" if b < n else "")))
    still = [_article(f"{t.colour} {t.name}" if t.colour else t.name) for t in tracks
             if t.visible == (0, n) and t.move is None and t.recolour is None]  # fmt: skip
    parts = [text for _, text in sorted(happenings)]
    if still:
        parts.append(" and ".join(still) + (" stays" if len(still) == 1 else " stay") + " in place")
    scene = assets.BACKGROUND_BY_FILE[bg["file"]].description
    listed = parts[0] if len(parts) == 1 else ", then ".join(parts[:-1]) + ", and " + parts[-1]
    return f"A video of {scene} in which {listed}."


def make_video_sample(rng: np.random.Generator, sample_id: str, out_dir: Path, cfg) -> Sample:
    unseen = cfg.split == "unseen"
    stage = pick_stage(rng, cfg.stages, cfg.split)
    for _attempt in range(100):
        plan = plan_clip(rng, cfg, unseen, busy=stage == 3)
        if plan is not None:
            break
    else:
        raise RuntimeError(f"{sample_id}: no clip plan after 100 tries")
    width, height, fps, n, bg, tracks, (kind, target, f1, f2) = plan
    rel_path = media_path(sample_id, "video", "mp4")
    with atomic_output(out_dir / rel_path) as tmp:
        encode_mp4(tmp, render_frames(width, height, n, bg, tracks), width, height, fps)
    duration = n / fps
    media = Media(type="video", path=rel_path, width=width, height=height, duration=duration)

    def label(ev: tuple[int, str, int, int]) -> SpanLabel:
        k, kind, a, b = ev
        return SpanLabel(phrase=event_clause(tracks[k], kind), start=a / fps, end=b / fps)

    def span(lab: SpanLabel) -> Span:
        return Span.from_seconds(lab.start, lab.end, duration)

    trng = text_rng(rng)
    all_events = events(tracks, n)
    meta = {"fps": fps, "num_frames": n, "background": bg, "tracks": [asdict(t) for t in tracks],
            "events": [{"track": k, "kind": kd, "start_frame": a, "end_frame": b} for k, kd, a, b in all_events],
            "query": {"kind": kind, "track": target, "start_frame": f1, "end_frame": f2}}  # fmt: skip
    if stage == 1:
        pairs = [instruct.render("caption_video", trng, caption=clip_caption(tracks, n, bg))]
        return record(sample_id, media, pairs, "caption", 1, cfg, meta=meta)
    target_label = label((target, kind, f1, f2))
    if stage == 2:
        pairs = [instruct.render("video_grounding", trng, query=target_label.phrase, items=[span(target_label)])]
        return record(sample_id, media, pairs, "video_grounding", 2, cfg, spans=[target_label], meta=meta)

    # Stage 3: ask for every event in turn; an event that overlaps no other much can be asked the other way
    # round (span given, event asked), where the answer is still unambiguous.
    order = [ev for ev in all_events if ev[:2] != (target, kind)]
    order = [(target, kind, f1, f2)] + [order[int(i)] for i in rng.permutation(len(order))]
    turns, labels = [], []
    for ev in order[:4]:
        lab = label(ev)
        alone = all(span_iou(span(lab), span(label(o))) < 0.3 for o in all_events if o != ev)
        task = "video_event" if labels and alone and rng.random() < 0.4 else "video_grounding"
        turns.append((task, {"query": lab.phrase, "items": [span(lab)]}))
        labels.append(lab)
    if len(turns) < 2 or rng.random() < 0.3:
        turns.append(("caption_video", {"caption": clip_caption(tracks, n, bg)}))
    return record(sample_id, media, instruct.dialogue(turns, trng), "dialogue", 3, cfg, spans=labels, meta=meta)
