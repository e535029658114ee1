"""Videos: decoded frames show each event exactly inside its labelled span, and the mp4 has the planned timing."""

from collections import Counter

import av
import numpy as np
import pytest

from omniground.data.schema import read_jsonl
from omniground.data.synth import assets
from omniground.data.synth.build import run
from omniground.data.synth.common import HELD_OUT
from omniground.data.synth.config import SynthConfig
from omniground.data.synth.video import Track, _sprite
from omniground.grounding import parse
from omniground.media import probe_video

N = 24


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_video")
    run(
        SynthConfig(
            out=out,
            counts={"image": 0, "video": N, "audio": 0},
            seed=5,
            video_size=96,
            video_seconds=(2.0, 4.0),
            fps=(5, 8, 12),
            workers=2,
        ),
        progress=False,
    )
    return out, list(read_jsonl(out / "train.jsonl"))


def _decode(path) -> tuple[np.ndarray, np.ndarray]:
    """All frames (N, H, W, 3) uint8 and their presentation times in seconds (N,)."""
    frames, times = [], []
    with av.open(str(path)) as c:
        for f in c.decode(c.streams.video[0]):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.pts * f.time_base))
    return np.stack(frames), np.array(times)


def _region(track: Track, at: tuple[int, int]) -> tuple[slice, slice]:
    w, h = _sprite(track.name, None, track.size).size
    return slice(at[1], at[1] + h), slice(at[0], at[0] + w)


def test_events_happen_exactly_in_their_spans(data):
    out, samples = data
    kinds = Counter()
    for s in samples:
        meta = s.meta
        frames, times = _decode(out / s.media[0].path)
        fps, n = meta["fps"], meta["num_frames"]
        assert len(frames) == n and np.allclose(times, np.arange(n) / fps)  # frame i shown from i/fps
        assert s.media[0].duration == pytest.approx(n / fps)
        bg = meta["background"]
        empty = np.asarray(
            assets.background(bg["file"], tuple(bg["crop"]), (s.media[0].width, s.media[0].height), bg["flip"])
        ).astype(np.float32)
        for ev in meta["events"]:
            t = meta["tracks"][ev["track"]]
            track = Track(t["name"], t["size"], t["colour"], tuple(t["p0"]), tuple(t["p1"]), tuple(t["visible"]))
            start, end = ev["start_frame"] / fps, ev["end_frame"] / fps
            inside = (times >= start - 1e-9) & (times < end - 1e-9)
            ys, xs = _region(track, track.p0)
            # How far each frame is, at the object's start position, from the empty background.
            away = np.abs(frames[:, ys, xs].astype(np.float32) - empty[ys, xs]).mean(axis=(1, 2, 3))  # (N,)
            if ev["kind"] == "visible":  # drawn in the span and only there
                assert away[inside].min() > 2 * away[~inside].max() + 1, s.id
            elif ev["kind"] == "move":  # at p0 up to the start, elsewhere after the end (when the places differ)
                y1, x1 = _region(track, track.p1)
                if y1.start >= ys.stop or ys.start >= y1.stop or x1.start >= xs.stop or xs.start >= x1.stop:
                    assert away[times <= start + 1e-9].min() > 2 * away[times >= end - 1e-9].max() + 1, s.id
            else:  # colour: the tint's hue fills the object in the span, a colour it never shows otherwise
                assert t["recolour"][2] not in assets.looks(t["name"], t["colour"]), s.id
                target = np.asarray(assets.COLOURS[t["recolour"][2]], np.float32)
                rgb = frames[:, ys, xs].reshape(len(frames), -1, 3).astype(np.float32)
                d = np.linalg.norm(rgb / (rgb.sum(-1, keepdims=True) + 1) - target / target.sum(), axis=-1)
                close = (d < 0.12).mean(axis=1)  # share of pixels of that hue, per frame
                assert close[inside].min() > close[~inside].max(), s.id
            kinds[ev["kind"]] += 1
        for label in s.spans:  # every label is one of the planned events, in seconds
            assert any(
                abs(label.start - e["start_frame"] / fps) < 1e-9 and abs(label.end - e["end_frame"] / fps) < 1e-9
                for e in meta["events"]
            )
    assert set(kinds) == {"visible", "move", "colour"}, kinds


def test_tasks_text_and_probe(data):
    out, samples = data
    tasks = Counter((s.task, s.stage) for s in samples)
    assert tasks[("video_grounding", 2)] and tasks[("caption", 1)] and tasks[("dialogue", 3)], tasks
    for s in samples:
        info = probe_video(out / s.media[0].path)
        assert info.duration == pytest.approx(s.media[0].duration, abs=1 / info.fps + 1e-6)
        assert (info.width, info.height) == (s.media[0].width, s.media[0].height)
        if s.task == "video_grounding":
            (span,) = parse(s.conversation[1].content).spans
            assert span.start == pytest.approx(s.spans[0].start / s.media[0].duration, abs=0.0051)
            assert span.end == pytest.approx(s.spans[0].end / s.media[0].duration, abs=0.0051)
            assert (s.spans[0].end - s.spans[0].start) / s.media[0].duration >= 0.15 - 1e-9
        if s.task == "caption":
            assert not s.spans and parse(s.conversation[1].content).spans == []


def test_unseen_split_moves_only_held_out_objects(tmp_path, data):
    _, train = data
    for s in train:
        for ev in s.meta["events"]:
            if ev["kind"] == "move":
                assert s.meta["tracks"][ev["track"]]["name"] not in HELD_OUT.moving_objects
    run(
        SynthConfig(
            out=tmp_path,
            counts={"image": 0, "video": 4, "audio": 0},
            split="unseen",
            video_size=64,
            video_seconds=(1.0, 2.0),
            fps=(6,),
        ),
        progress=False,
    )
    for s in read_jsonl(tmp_path / "unseen.jsonl"):
        q = s.meta["query"]
        assert q["kind"] == "move" and s.meta["tracks"][q["track"]]["name"] in HELD_OUT.moving_objects
