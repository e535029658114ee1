"""Small real media files the tests write: an mp4 from frames, a 16-bit mono WAV from samples."""

import wave
from pathlib import Path

import av
import numpy as np


def write_video(path: Path, frames: np.ndarray, fps: int, codec: str = "mpeg4") -> Path:
    """frames (N, H, W, 3) uint8 RGB -> a real yuv420p video file (durations are probed from it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        out.mux(stream.encode())
    return path


def ramp_video(path: Path, seconds: float, fps: int = 10, size: int = 32) -> Path:
    """A clip of a known length: frame i is flat grey level i (mod 255)."""
    levels = np.arange(int(seconds * fps)) % 255
    return write_video(path, np.broadcast_to(levels[:, None, None, None], (len(levels), size, size, 3)).astype(np.uint8),
                       fps)


def write_wav(target, pcm: np.ndarray, rate: int = 16000):
    """int16 mono samples -> a WAV at `target` (a path, parents created, or a binary file object)."""
    if isinstance(target, (str, Path)):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        target = str(target)
    with wave.open(target, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return target
