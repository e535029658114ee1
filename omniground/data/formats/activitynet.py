"""ActivityNet Captions (ranjaykrishna.com/densevid): `train.json`, `val_1.json`, `val_2.json`.

{"v_<youtube_id>": {"duration": seconds, "timestamps": [[start, end], ...], "sentences": [...]}}.
Videos are `--media-root/<key>.<ext>` or without the `v_` prefix (both seen in the wild); the
annotation's own `duration` is used, since its timestamps are relative to it.
--task video_grounding (default): one sample per sentence. --task dialogue: one multi-turn sample
per video asking for several of its events in turn (the original's stage-3 use of this set).
"""

from __future__ import annotations

from typing import Iterator

from omniground.data import instruct
from omniground.data.formats.base import (
    NOT_AN_OBJECT,
    VIDEO_EXTS,
    Context,
    FormatError,
    Skip,
    load_json,
    split_from_name,
)
from omniground.data.formats.spans import span_sample
from omniground.data.schema import Sample
from omniground.grounding import Span

LICENSE = "ActivityNet Captions: see source terms; videos: YouTube"
MAX_DIALOGUE_TURNS = 4


def _video(ctx: Context, key: str):
    path = ctx.find(key, VIDEO_EXTS)
    if not path.exists() and key.startswith("v_"):
        alt = ctx.find(key[2:], VIDEO_EXTS)
        if alt.exists():
            return alt
    return path


def convert(ctx: Context) -> Iterator[Sample | Skip]:
    mode = ctx.options.get("task") or "video_grounding"
    if mode not in ("video_grounding", "dialogue"):
        raise FormatError(f"--task must be video_grounding or dialogue for activitynet, got {mode!r}")
    for path in ctx.inputs:
        data = load_json(path)
        if not isinstance(data, dict):
            raise FormatError(f"{path}: expected {{video_id: {{duration, timestamps, sentences}}}}")
        split = ctx.options.get("split") or split_from_name(path.name)
        for key, rec in data.items():
            if not isinstance(rec, dict):
                yield Skip(NOT_AN_OBJECT, f"anet-{key}")
                continue
            stamps, sents = rec.get("timestamps") or [], rec.get("sentences") or []
            if len(stamps) != len(sents):
                yield Skip("timestamps and sentences differ in number", f"anet-{key}")
                continue
            try:
                duration = float(rec["duration"])
            except (KeyError, TypeError, ValueError):
                yield Skip("no duration", f"anet-{key}")
                continue
            media, why = ctx.media(_video(ctx, key), "video", duration=duration)
            if media is None:
                yield Skip(why, f"anet-{key}")
                continue
            if mode == "video_grounding":
                for n, (ts, sent) in enumerate(zip(stamps, sents)):
                    yield span_sample(
                        ctx, id=f"anet-{key}-{n}", media=media, query=sent, windows=[tuple(ts)], split=split,
                        source="activitynet_captions", license=LICENSE, meta={"video_id": key},
                    )
            else:
                yield _dialogue(ctx, key, media, stamps, sents, split)


def _dialogue(ctx, key, media, stamps, sents, split) -> Sample | Skip:
    rid = f"anet-dialogue-{key}"
    d = media.duration
    events = []
    for (s, e), sent in zip(stamps, sents):
        s, e = max(0.0, float(s)), min(float(e), d)
        if e > s and sent.strip():
            events.append((s, e, " ".join(sent.split())))
    if not events:
        return Skip("no usable event", rid)
    rng = ctx.rng(rid)
    chosen = sorted(rng.sample(events, min(MAX_DIALOGUE_TURNS, len(events))), key=lambda x: x[0])
    items = [("video_grounding", {"query": q, "items": [Span.from_seconds(s, e, d)]}) for s, e, q in chosen]
    pairs = instruct.dialogue(items, rng)
    return ctx.sample(
        id=rid, media=[media], conversation=instruct.conversation(pairs, ["video"]),
        spans=[{"phrase": q, "start": s, "end": e} for s, e, q in chosen], task="dialogue", stage=3,
        source="activitynet_captions", license=ctx.options.get("license") or LICENSE, split=split,
        meta={"video_id": key},
    )
