"""Audio timelines: real sound events and speech placed on a noise bed, with exact onsets and offsets.

Onset rule: every clip is trimmed (assets.trim) to its first..last sample within 30 dB of its peak,
so a clip placed at sample s starts sounding at s and its span is [s, s + len) / SAMPLE_RATE. Short
sounds (a bell strike, a shutter click) are struck several times with 0.12..0.3 s gaps and the
event spans the first onset to the last offset. Events never overlap (>= MIN_GAP_S apart).

Mix: each event gets a gain of -6..0 dB; noise (white, or ALSA's recorded pink noise) is scaled so
that the RMS of the events' samples over the RMS of the noise is the sample's SNR (5..30 dB); a
mix that would clip is scaled down as a whole. The queried event lasts >= QUERY_SHARE of the clip
(so its span text still matches its label, see schema.SPAN_MATCH_IOU); its sound or words occur
once per clip, so the answer is one span.

Tasks per stage: 1 a caption of the events in time order; 2 one query -> span; 3 a dialogue asking
for several events (each >= DIALOGUE_SHARE of the clip), some the other way round (span -> event).
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omniground.data import instruct
from omniground.data.schema import Media, Sample, SpanLabel
from omniground.data.synth import assets
from omniground.data.synth.assets import SAMPLE_RATE
from omniground.data.synth.common import HELD_OUT, choice, media_path, pick_stage, record, text_rng, weighted
from omniground.errors import UserError
from omniground.files import atomic_output
from omniground.grounding import Span

MIN_GAP_S = 0.25
QUERY_SHARE = 0.12
DIALOGUE_SHARE = 0.06  # events asked about later in a dialogue last at least this share of the clip
SNR_DB = (5.0, 30.0)
QUERY_WEIGHTS = {"sound": 0.5, "espeak": 0.35, "alsa": 0.15}

# Spoken phrases with exactly known text (espeak-ng). HELD_OUT.speech_phrases are spoken only in "unseen".
PHRASES = (
    "open the door",
    "turn off the light",
    "where is the red car",
    "please sit down",
    "the meeting starts now",
    "call me tomorrow",
    "put the cup on the table",
    "look at the dog",
    "it is raining outside",
    "let us go home",
    "pass me the salt",
    "the bus is late again",
    "good morning everyone",
    "thank you very much",
    "watch out for the step",
    "the cat is sleeping",
    "we need more time",
    "read the first page",
    "the music is too loud",
    "bring an umbrella",
    "close the window please",
    "the train leaves at noon",
    "where are my glasses",
)


@dataclass
class Event:
    kind: str  # sound | espeak | alsa
    label: str  # sound name, or the exact words spoken
    clause: str  # "the bell rings", "someone says 'open the door'"
    audio: np.ndarray  # (T,) float32, trimmed
    detail: dict  # how it was made (voice, speed, file, strikes)
    start: int = 0  # samples
    gain_db: float = 0.0

    @property
    def end(self) -> int:
        return self.start + len(self.audio)


def _phrases(unseen: bool) -> list[str]:
    return sorted(HELD_OUT.speech_phrases) if unseen else [p for p in PHRASES if p not in HELD_OUT.speech_phrases]


def _alsa_files(unseen: bool) -> list[str]:
    return [f for f, words in assets.ALSA_SPEECH.items() if (words in HELD_OUT.speech_phrases) == unseen]


def make_event(rng: np.random.Generator, kind: str, label: str) -> Event:
    if kind == "sound":
        s = assets.SOUND_BY_NAME[label]
        clip = assets.sound_clip(label)
        strikes = int(rng.integers(s.repeats[0], s.repeats[1] + 1))
        pieces = [clip]
        for _ in range(strikes - 1):
            pieces += [np.zeros(int(rng.uniform(0.12, 0.3) * SAMPLE_RATE), np.float32), clip]
        return Event(kind, label, s.clause, np.concatenate(pieces), {"file": s.file, "strikes": strikes})
    if kind == "espeak":
        voice, speed = choice(rng, assets.ESPEAK_VOICES), choice(rng, assets.ESPEAK_SPEEDS)
        return Event(kind, label, f"someone says '{label}'", assets.speech(label, voice, speed),
                     {"voice": voice, "speed": speed})  # fmt: skip
    file = next(f for f, w in assets.ALSA_SPEECH.items() if w == label)
    return Event(kind, label, f"someone says '{label}'", assets.alsa_speech(file), {"file": file})


def _distractor(rng: np.random.Generator, exclude: set[str]) -> Event:
    """Any event but the excluded ones; held-out phrases are never distractors, in any split."""
    kind = weighted(rng, {"sound": 0.6, "espeak": 0.3, "alsa": 0.1})
    options = {
        "sound": [s.name for s in assets.SOUNDS],
        "espeak": _phrases(False),
        "alsa": [assets.ALSA_SPEECH[f] for f in _alsa_files(False)],
    }[kind]
    options = [o for o in options if o not in exclude]
    return make_event(rng, kind, choice(rng, options))


def plan_timeline(rng: np.random.Generator, cfg, unseen: bool) -> tuple[int, list[Event], Event]:
    """(length in samples, events placed in time, the queried event)."""
    lo, hi = cfg.audio_seconds
    for _attempt in range(50):  # a queried event that fits the longest clip allowed, with a gap on both sides
        kind = weighted(rng, QUERY_WEIGHTS)
        if unseen:
            kind = "espeak" if rng.random() < 0.75 else "alsa"
        labels = {
            "sound": [s.name for s in assets.SOUNDS],
            "espeak": _phrases(unseen),
            "alsa": [assets.ALSA_SPEECH[f] for f in _alsa_files(unseen)],
        }[kind]
        target = make_event(rng, kind, choice(rng, labels))
        if len(target.audio) / SAMPLE_RATE + 2 * MIN_GAP_S <= hi:
            break
    else:
        raise UserError(f"--audio-seconds: {hi:g} s is too short for the packaged sounds and speech; allow >= 3 s")
    target_s = len(target.audio) / SAMPLE_RATE
    longest = min(hi, target_s / QUERY_SHARE)
    seconds = float(rng.uniform(min(max(lo, target_s + 2 * MIN_GAP_S), longest), longest))
    length = max(int(seconds * SAMPLE_RATE), len(target.audio) + 2 * int(MIN_GAP_S * SAMPLE_RATE))

    events = [target]
    used = {target.label}
    for _ in range(int(rng.integers(1, 6))):
        e = _distractor(rng, used)
        used.add(e.label)
        events.append(e)
    # Lay events out left to right in a random order with random gaps; drop those that do not fit.
    order = [events[int(i)] for i in rng.permutation(len(events))]
    gap = int(MIN_GAP_S * SAMPLE_RATE)
    budget = length - sum(len(e.audio) for e in order) - gap * (len(order) + 1)
    while budget < 0:  # drop distractors (never the target) until the rest fits
        drop = next(e for e in reversed(order) if e is not target)
        order.remove(drop)
        budget = length - sum(len(e.audio) for e in order) - gap * (len(order) + 1)
    slack = rng.dirichlet(np.ones(len(order) + 1)) * budget  # extra silence before each event and at the end
    t = 0
    for e, extra in zip(order, slack):
        t += gap + int(extra)
        e.start = t
        e.gain_db = float(rng.uniform(-6, 0))
        t = e.end
    return length, order, target


def mix(rng: np.random.Generator, length: int, events: list[Event], snr_db: float, noise: str) -> np.ndarray:
    """Events over noise at `snr_db` (RMS of event samples / RMS of noise), peak <= 0.95. (T,) float32."""
    signal = np.zeros(length, np.float32)
    for e in events:
        signal[e.start : e.end] += e.audio * np.float32(10 ** (e.gain_db / 20))
    active = np.concatenate([signal[e.start : e.end] for e in events])
    signal_rms = float(np.sqrt(np.mean(active.astype(np.float64) ** 2)))
    if noise == "white":
        bed = rng.standard_normal(length).astype(np.float32)
    else:
        pink = assets.alsa_noise()
        offset = int(rng.integers(len(pink)))
        bed = np.resize(np.roll(pink, -offset), length).astype(np.float32)
    bed *= np.float32(signal_rms / 10 ** (snr_db / 20) / float(np.sqrt(np.mean(bed.astype(np.float64) ** 2))))
    out = signal + bed
    peak = float(np.abs(out).max())
    return out * np.float32(0.95 / peak) if peak > 0.95 else out


def write_audio(path: Path, samples: np.ndarray, fmt: str) -> None:
    """16-bit PCM wav (stdlib) or flac (PyAV), mono at SAMPLE_RATE."""
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")  # (T,)
    if fmt == "wav":
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm.tobytes())
        return
    import av

    with av.open(str(path), mode="w", format="flac", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono", format="s16")
        stream.codec_context.options = {"flags": "+bitexact"}
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def single_sound(rng: np.random.Generator, sound: str, out_dir: Path, rel_path: str, fmt: str) -> tuple[Media, dict]:
    """A short clip of one sound event over noise (the audio half of a sound-localization sample)."""
    event = make_event(rng, "sound", sound)
    gap = int(MIN_GAP_S * SAMPLE_RATE)
    event.start = gap + int(rng.integers(0, SAMPLE_RATE // 2))
    event.gain_db = float(rng.uniform(-6, 0))
    length = event.end + gap + int(rng.integers(0, SAMPLE_RATE // 2))
    snr, noise = float(rng.uniform(*SNR_DB)), "white" if rng.random() < 0.5 else "alsa-pink"
    with atomic_output(out_dir / rel_path) as tmp:
        write_audio(tmp, mix(rng, length, [event], snr, noise), fmt)
    meta = {"sound": sound, "start": event.start / SAMPLE_RATE, "end": event.end / SAMPLE_RATE,
            "snr_db": round(snr, 2), "noise": noise, **event.detail}  # fmt: skip
    return Media(type="audio", path=rel_path, duration=length / SAMPLE_RATE), meta


def _caption_clause(e: Event) -> str:
    """'the bell rings' -> 'a bell rings' (a caption introduces what a query refers back to)."""
    if e.clause.startswith("the "):
        rest = e.clause[4:]
        return ("an " if rest[:1] in "aeiou" else "a ") + rest
    return e.clause


def timeline_caption(events: list[Event], noise: str) -> str:
    """'Over white noise, a bell rings, then someone says 'open the door'.' Events in time order."""
    said = [_caption_clause(e) for e in sorted(events, key=lambda e: e.start)]
    bed = "white noise" if noise == "white" else "a low rushing noise"
    return f"Over {bed}, " + ", then ".join(said) + "."


def make_audio_sample(rng: np.random.Generator, sample_id: str, out_dir: Path, cfg) -> Sample:
    unseen = cfg.split == "unseen"
    stage = pick_stage(rng, cfg.stages, cfg.split)
    length, events, target = plan_timeline(rng, cfg, unseen)
    snr = float(rng.uniform(*SNR_DB))
    noise = "white" if rng.random() < 0.5 else "alsa-pink"
    samples = mix(rng, length, events, snr, noise)
    rel_path = media_path(sample_id, "audio", cfg.audio_format)
    with atomic_output(out_dir / rel_path) as tmp:
        write_audio(tmp, samples, cfg.audio_format)
    duration = length / SAMPLE_RATE
    media = Media(type="audio", path=rel_path, duration=duration)

    def label(e: Event) -> SpanLabel:
        return SpanLabel(phrase=e.clause, start=e.start / SAMPLE_RATE, end=e.end / SAMPLE_RATE)

    def span(lab: SpanLabel) -> Span:
        return Span.from_seconds(lab.start, lab.end, duration)

    trng = text_rng(rng)
    meta = {
        "sample_rate": SAMPLE_RATE,
        "snr_db": round(snr, 2),
        "noise": noise,
        "query": {"kind": target.kind, "label": target.label},
        "events": [
            {
                "kind": e.kind,
                "label": e.label,
                "start": e.start / SAMPLE_RATE,
                "end": e.end / SAMPLE_RATE,
                "gain_db": round(e.gain_db, 2),
                **e.detail,
            }  # fmt: skip
            for e in events
        ],
    }
    if stage == 1:
        pairs = [instruct.render("caption_audio", trng, caption=timeline_caption(events, noise))]
        return record(sample_id, media, pairs, "caption", 1, cfg, meta=meta)
    if stage == 2:
        lab = label(target)
        pairs = [instruct.render("audio_grounding", trng, query=lab.phrase, items=[span(lab)])]
        return record(sample_id, media, pairs, "audio_grounding", 2, cfg, spans=[lab], meta=meta)

    # Stage 3: the queried event, then other events long enough for two-decimal span text; events never
    # overlap, so "what is heard at {span}" has one answer.
    others = [e for e in events if e is not target and len(e.audio) >= DIALOGUE_SHARE * length]
    order = [target] + [others[int(i)] for i in rng.permutation(len(others))][:3]
    turns, labels = [], []
    for e in order:
        lab = label(e)
        task = "audio_event" if labels and rng.random() < 0.4 else "audio_grounding"
        turns.append((task, {"query": lab.phrase, "items": [span(lab)]}))
        labels.append(lab)
    if len(turns) < 2 or rng.random() < 0.3:
        turns.append(("caption_audio", {"caption": timeline_caption(events, noise)}))
    return record(sample_id, media, instruct.dialogue(turns, trng), "dialogue", 3, cfg, spans=labels, meta=meta)
