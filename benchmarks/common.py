"""What the benchmarks share: media made on the spot (no binaries in the repo) and memory readings."""

from __future__ import annotations

import resource
import wave
from pathlib import Path

import numpy as np


def make_media(folder: Path, image_size: tuple[int, int], video_size: tuple[int, int], video_seconds: float,
               fps: int = 10) -> dict[str, Path]:
    """A random PNG (w, h), an H.264 clip of a bright bar sliding over grey (w, h, seconds at `fps`) and
    30 s of 16 kHz noise with a 660 Hz tone at 12-15 s. Returns {"image", "video", "audio"} paths."""
    import av
    from PIL import Image

    rng = np.random.default_rng(0)
    image = folder / "scene.png"
    Image.fromarray(rng.integers(0, 255, (image_size[1], image_size[0], 3), dtype=np.uint8)).save(image)

    video = folder / "clip.mp4"
    (w, h), bar = video_size, video_size[1] // 3
    with av.open(str(video), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for k in range(int(video_seconds * fps)):
            frame = np.full((h, w, 3), 30, np.uint8)
            x = k % (w - bar)
            frame[bar : 2 * bar, x : x + bar] = 220
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())

    audio = folder / "sound.wav"
    sr = 16000
    t = np.arange(30 * sr) / sr
    x = 0.05 * rng.standard_normal(t.shape) + 0.3 * np.sin(2 * np.pi * 660 * t) * ((t > 12) & (t < 15))
    with wave.open(str(audio), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(sr)
        f.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return {"image": image, "video": video, "audio": audio}


def rss_high_water_mb() -> float:
    """Peak resident memory of this process since start or the last `reset_high_water()` (Linux VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_high_water() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
