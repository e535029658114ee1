"""Audio in any container/codec -> mono float32 at one sample rate, and fixed windows over the whole clip.

Audio encoders take fixed-length clips at a fixed rate; windows carry their start times so that what a model
says about a window maps back to seconds of the original clip.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import av
import numpy as np

from omniground.media.container import is_still_image, open_container, video_streams
from omniground.media.errors import MediaError

SAMPLE_RATE = 16_000  # what speech/audio encoders (Whisper, BEATs, CLAP, ImageBind) expect
MAX_AUDIO_BYTES = 16 * 1024**3  # also the audio track of a large video
MAX_DURATION = 4 * 3600.0  # seconds

# Containers whose header states the exact duration, so decoding much less than that means the file is cut.
_EXACT_DURATION_FORMATS = ("wav", "w64", "aiff", "flac", "mov", "mp4", "m4a", "3gp", "3g2", "mj2")
_TRUNCATED_BELOW = 0.9  # fraction of the promised duration that must decode


@dataclass(frozen=True, eq=False)
class Audio:
    """A mono waveform; `duration` is len(samples) / sample_rate, kept for readability at call sites."""

    samples: np.ndarray  # (T,) float32 in [-1, 1]
    sample_rate: int
    duration: float  # seconds


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    max_bytes: int = MAX_AUDIO_BYTES,
    max_duration: float = MAX_DURATION,
) -> Audio:
    """Decode the first audio stream of `path` (an audio file or a video's sound track) to mono at `sample_rate`.

    FFmpeg's resampler changes the rate; channels are then averaged here, because FFmpeg's own downmix to
    mono adds channels with gain sqrt(1/2) each and so leaves [-1, 1] for loud stereo. Raises MediaError
    for files with no audio, no samples, a cut-off end, or more than `max_duration` seconds.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    chunks: list[np.ndarray] = []
    total = 0
    with open_container(path, max_bytes) as container:
        _check_chunk_size(path)
        if not container.streams.audio:
            if is_still_image(container):
                kind = "a still image"
            elif video_streams(container):
                kind = "a video without a sound track"
            else:
                kind = "no audio stream"
            raise MediaError(path, f"no audio: {kind}")
        stream = container.streams.audio[0]
        promised = _header_duration(stream, container)
        if promised is not None and promised > max_duration:
            raise MediaError(path, f"too long ({promised:.1f}s > limit {max_duration:.0f}s)")
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)  # keeps the channel layout
        try:
            for frame in container.decode(stream):
                frame.pts = None  # resample by sample count; broken timestamps must not insert gaps or drops
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))  # (C, n) -> (n,)
                    total += chunks[-1].shape[0]
                if total > max_duration * sample_rate:
                    raise MediaError(path, f"too long (more than the limit of {max_duration:.0f}s)")
            for out in resampler.resample(None):  # flush the resampler's delay line
                chunks.append(out.to_ndarray().mean(axis=0))
        except av.FFmpegError:
            raise  # open_container reports decoding errors
        except ValueError as e:  # PyAV: a frame whose format/layout changed mid-stream
            raise MediaError(path, f"audio format changes mid-stream ({e})") from None
        exact = container.format.name.split(",")[0] in _EXACT_DURATION_FORMATS

    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)  # (T,)
    if samples.size == 0:
        raise MediaError(path, "no audio samples (zero duration)")
    if exact and promised:
        if samples.size < _TRUNCATED_BELOW * promised * sample_rate:
            raise MediaError(path, f"truncated: decoded {samples.size / sample_rate:.2f}s of the {promised:.2f}s promised")
        samples = samples[: round(promised * sample_rate)]  # lossy codecs pad their last frame past the end
    duration = samples.size / sample_rate
    np.clip(samples, -1.0, 1.0, out=samples)  # resampling filters ring slightly past full scale
    return Audio(samples=samples, sample_rate=sample_rate, duration=duration)


def audio_windows(audio: Audio, window_s: float, hop_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cut `audio` into windows of `window_s` seconds every `hop_s` seconds (default: no overlap).

    The windows cover the whole clip, the last one zero-padded, and no window starts where the previous ones
    already reach the end. Returns (windows (W, L) float32, starts (W,) float64 seconds); W = 0 for empty audio.
    """
    hop_s = window_s if hop_s is None else hop_s
    length = round(window_s * audio.sample_rate)  # L samples
    hop = round(hop_s * audio.sample_rate)
    if length < 1 or hop < 1:
        raise ValueError(f"window_s and hop_s must each span at least one sample, got {window_s}, {hop_s}")
    total = audio.samples.shape[0]
    count = 0 if total == 0 else 1 + max(0, math.ceil((total - length) / hop))  # W
    starts = np.arange(count) * hop  # (W,) samples
    padded = np.zeros(max(total, (count - 1) * hop + length if count else 0), dtype=np.float32)
    padded[:total] = audio.samples
    windows = padded[starts[:, None] + np.arange(length)[None, :]]  # (W, L)
    return windows, starts / audio.sample_rate


def _header_duration(stream: av.AudioStream, container) -> float | None:
    """Seconds the header promises for this stream, if it says."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _check_chunk_size(path: str | os.PathLike) -> None:
    """RIFF (WAV) and FORM (AIFF) files state their own size; FFmpeg estimates a cut file's duration from
    what is left of it, so a truncated WAV would otherwise decode 'fine' and just be shorter."""
    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"FORM"):
        return
    declared = 8 + int.from_bytes(head[4:8], "little" if head[:4] == b"RIFF" else "big")
    actual = os.path.getsize(path)
    if declared > 8 and actual < declared and declared != 0xFFFFFFFF + 8:  # 0xFFFFFFFF: a streamed WAV of unknown size
        raise MediaError(path, f"truncated: {actual} of the {declared} bytes its header declares")
