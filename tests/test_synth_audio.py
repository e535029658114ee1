"""Audio timelines: each labelled sound or utterance starts and ends exactly where the label says, over noise.

The check is a matched filter: the clean asset (re-made from the sample's metadata) is correlated with
the written file; the normalised correlation peaks exactly at the labelled onset, at every SNR.
"""

from collections import Counter

import numpy as np
import pytest

from omniground.data.schema import read_jsonl
from omniground.data.synth import assets
from omniground.data.synth.audio import PHRASES
from omniground.data.synth.build import run
from omniground.data.synth.common import HELD_OUT
from omniground.data.synth.config import SynthConfig
from omniground.grounding import parse
from omniground.media import load_audio

SR = assets.SAMPLE_RATE
N = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_audio")
    run(
        SynthConfig(out=out, counts={"image": 0, "video": 0, "audio": N}, seed=7, audio_seconds=(3.0, 8.0), workers=2),
        progress=False,
    )
    return out, list(read_jsonl(out / "train.jsonl"))


def _clean(event: dict) -> np.ndarray:
    """The asset an event was made from (one strike of a repeated sound)."""
    if event["kind"] == "sound":
        return assets.sound_clip(event["label"])
    if event["kind"] == "espeak":
        return assets.speech(event["label"], event["voice"], event["speed"])
    return assets.alsa_speech(event["file"])


def _ncc(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of template c at every offset of x: (len(x) - len(c) + 1,)."""
    n = len(x) + len(c)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(c, size)), size)[: len(x) - len(c) + 1]
    cum = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    energy = cum[len(c) :] - cum[: len(cum) - len(c)]  # sum of x^2 under the template at each offset
    return corr / (np.linalg.norm(c) * np.sqrt(energy) + 1e-12)


def test_onsets_and_offsets_are_exact(data):
    out, samples = data
    kinds = Counter()
    for s in samples:
        x = load_audio(out / s.media[0].path).samples.astype(np.float64)  # (T,)
        assert len(x) / SR == pytest.approx(s.media[0].duration, abs=1 / SR)
        for ev in s.meta["events"]:
            clip = _clean(ev).astype(np.float64)
            a, b = round(ev["start"] * SR), round(ev["end"] * SR)
            score = _ncc(x, clip)
            # First strike starts at the onset (later strikes of the same sound lie beyond this window) ...
            assert int(np.argmax(score[: a + len(clip) // 2])) == pytest.approx(a, abs=1), (s.id, ev["label"])
            # ... and the last one ends at the offset.
            lo = max(0, b - 2 * len(clip) - int(0.1 * SR) + 1)
            assert lo + int(np.argmax(score[lo:])) == pytest.approx(b - len(clip), abs=1), (s.id, ev["label"])
            assert score[a] > 0.3  # clearly there, even at the lowest SNR
            kinds[ev["kind"]] += 1
        for label in s.spans:
            assert any(label.start == e["start"] and label.end == e["end"] for e in s.meta["events"])
    assert set(kinds) == {"sound", "espeak", "alsa"}, kinds


def test_snr_is_what_the_metadata_says(data):
    out, samples = data
    for s in samples:
        x = load_audio(out / s.media[0].path).samples.astype(np.float64)
        active = np.zeros(len(x), bool)
        for ev in s.meta["events"]:
            active[round(ev["start"] * SR) : round(ev["end"] * SR)] = True
        noise = np.mean(x[~active] ** 2)
        measured = 10 * np.log10((np.mean(x[active] ** 2) - noise) / noise)
        assert measured == pytest.approx(s.meta["snr_db"], abs=1.5), s.id
    assert {s.meta["noise"] for s in samples} == {"white", "alsa-pink"}
    snrs = [s.meta["snr_db"] for s in samples]
    assert min(snrs) >= 5 and max(snrs) <= 30 and max(snrs) - min(snrs) > 10


def test_assets_are_trimmed_to_their_onset():
    for clip in (
        assets.sound_clip("bell"),
        assets.alsa_speech("Front_Left.wav"),
        assets.speech("open the door", "en-us", 165),
    ):
        peak = np.abs(clip).max()
        floor = peak * 10 ** (assets.TRIM_DB / 20)
        assert abs(clip[0]) >= floor and abs(clip[-1]) >= floor


def test_tasks_and_held_out_speech(data, tmp_path):
    _, samples = data
    tasks = Counter((s.task, s.stage) for s in samples)
    assert tasks[("audio_grounding", 2)] and tasks[("caption", 1)] and tasks[("dialogue", 3)], tasks
    for s in samples:
        assert not {e["label"] for e in s.meta["events"]} & HELD_OUT.speech_phrases
        if s.task == "audio_grounding":
            (span,) = parse(s.conversation[1].content).spans
            assert span.start == pytest.approx(s.spans[0].start / s.media[0].duration, abs=0.0051)
            assert "someone says" in s.spans[0].phrase or s.meta["query"]["kind"] == "sound"
    assert HELD_OUT.speech_phrases - {"rear center"} <= set(PHRASES)
    run(
        SynthConfig(
            out=tmp_path,
            counts={"image": 0, "video": 0, "audio": 3},
            split="unseen",
            audio_seconds=(3.0, 5.0),
            audio_format="flac",
        ),
        progress=False,
    )
    for s in read_jsonl(tmp_path / "unseen.jsonl"):
        assert s.meta["query"]["label"] in HELD_OUT.speech_phrases
        assert s.media[0].path.endswith(".flac") and load_audio(tmp_path / s.media[0].path).duration > 1
