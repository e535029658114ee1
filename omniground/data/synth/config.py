"""Everything a generator run depends on; samples are a pure function of (config, modality, index)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omniground.data.synth.common import MODALITIES, SPLITS
from omniground.errors import UserError
from omniground.eval.heldout import is_reserved  # benchmark seeds: never training data

STAGES = (1, 2, 3)


class SynthConfigError(UserError):
    """A bad generator setting; str(e) lists every problem on one line."""


def split_count(n: int, overrides: dict[str, int | None]) -> dict[str, int]:
    """Samples per modality: `n` shared evenly (image first for the remainder), then explicit counts win.

    With no `n`, a modality without an explicit count gets none (`--images 10` makes only images).
    """
    base = {m: 0 for m in MODALITIES}
    if n:
        for k, m in enumerate(MODALITIES):
            base[m] = n // len(MODALITIES) + (k < n % len(MODALITIES))
    return {m: (overrides.get(m) if overrides.get(m) is not None else base[m]) for m in MODALITIES}


@dataclass(frozen=True)
class SynthConfig:
    out: Path
    counts: dict[str, int] = field(default_factory=lambda: {"image": 100, "video": 100, "audio": 100})
    seed: int = 0
    split: str = "train"
    workers: int = 1
    stages: tuple[int, ...] = STAGES  # 1 captions, 2 grounding, 3 multi-turn dialogue
    image_size: int = 384  # longest side of an image, pixels
    image_format: str = "jpg"  # jpg | png
    video_size: int = 160  # longest side of a video frame, pixels (even)
    video_seconds: tuple[float, float] = (4.0, 20.0)
    fps: tuple[int, ...] = (6, 8, 10, 12, 15, 24)  # each clip draws one
    audio_seconds: tuple[float, float] = (4.0, 20.0)
    audio_format: str = "wav"  # wav | flac

    def __post_init__(self) -> None:
        problems = []
        if set(self.counts) - set(MODALITIES) or any(v < 0 for v in self.counts.values()):
            problems.append(f"sample counts must be >= 0 per modality ({', '.join(MODALITIES)}), got {self.counts}")
        if self.total == 0:
            problems.append("nothing to generate: give --n or one of --images/--videos/--audios > 0")
        if self.split not in SPLITS:
            problems.append(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.split in ("train", "val") and is_reserved(self.seed):
            problems.append(
                f"--seed {self.seed} is reserved for the evaluation benchmark; pick another for {self.split}"
            )
        if self.workers < 1:
            problems.append(f"--workers must be >= 1, got {self.workers}")
        if not self.stages or set(self.stages) - set(STAGES):
            problems.append(f"--stages takes a comma list of 1, 2, 3, got {','.join(map(str, self.stages))!r}")
        if self.split == "unseen" and 2 not in self.stages:
            problems.append("--split unseen holds out grounding combinations: it needs stage 2 in --stages")
        if not 64 <= self.image_size <= 2048:
            problems.append(f"--image-size must be 64..2048, got {self.image_size}")
        if not 64 <= self.video_size <= 640:
            problems.append(f"--video-size must be 64..640, got {self.video_size}")
        if not self.fps or any(not 1 <= f <= 60 for f in self.fps):
            problems.append(f"--fps takes frame rates in 1..60, got {','.join(map(str, self.fps))!r}")
        if self.image_format not in ("jpg", "png"):
            problems.append(f"--image-format must be jpg or png, got {self.image_format!r}")
        if self.audio_format not in ("wav", "flac"):
            problems.append(f"--audio-format must be wav or flac, got {self.audio_format!r}")
        for flag, (lo, hi) in (("--video-seconds", self.video_seconds), ("--audio-seconds", self.audio_seconds)):
            if not 1.0 <= lo <= hi <= 120.0:
                problems.append(f"{flag} needs 1 <= min <= max <= 120, got {lo},{hi}")
        if problems:
            raise SynthConfigError("; ".join(problems))

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if self.counts.get(m, 0) > 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
