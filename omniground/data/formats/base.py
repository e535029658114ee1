"""What every converter shares: the run context, media look-up, skip reasons and the summary.

A converter is a generator `convert(ctx) -> Iterator[Sample | Skip]`: one item per source record,
a `Skip` (with a short reason) for a record that cannot become a valid sample. `run_converter`
counts both, and missing media files, and writes the valid samples atomically. Missing media are
reported, never fatal: annotations are often converted before (or without) the media download.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import ValidationError

from omniground.data import instruct
from omniground.data.schema import Media, Sample, write_jsonl
from omniground.errors import UserError

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".m4a")


NOT_AN_OBJECT = "record is not a JSON object"


class FormatError(UserError):
    """The input as a whole is unusable (wrong file, wrong layout, wrong option): one line for the user."""


@dataclass(frozen=True)
class Skip:
    reason: str
    record: str = ""


@dataclass
class Report:
    format: str
    converted: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    skip_examples: dict = field(default_factory=dict)  # reason -> first record id
    missing_media: int = 0
    missing_examples: list = field(default_factory=list)
    tasks: Counter = field(default_factory=Counter)

    def skip(self, s: Skip) -> None:
        self.skipped[s.reason] += 1
        self.skip_examples.setdefault(s.reason, s.record)

    def missing(self, path: Path) -> None:
        self.missing_media += 1
        if len(self.missing_examples) < 5:
            self.missing_examples.append(str(path))

    def as_dict(self) -> dict:
        return {
            "format": self.format,
            "converted": self.converted,
            "skipped": dict(self.skipped),
            "missing_media": self.missing_media,
            "tasks": dict(self.tasks),
        }


@dataclass
class Context:
    """Everything a converter may use besides its inputs."""

    inputs: list[Path]
    media_root: Path
    out_dir: Path  # where the JSONL goes; media paths are written relative to it
    report: Report
    seed: int = 0
    durations: dict[str, float] = field(default_factory=dict)  # media id -> seconds, from --durations
    probe: bool = True  # read sizes/durations from media files that exist
    options: dict[str, Any] = field(default_factory=dict)
    _seen: set = field(default_factory=set)
    _found: dict = field(default_factory=dict)  # find() memo
    _media: dict = field(default_factory=dict)  # media() memo: Media is immutable once built

    def rng(self, key: str) -> random.Random:
        """A per-record RNG: the same record gets the same phrasing whatever the order or subset."""
        return random.Random(f"{self.seed}:{self.report.format}:{key}")

    def media_path(self, rel: str | os.PathLike) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.media_root / p

    def find(self, stem: str, exts: tuple[str, ...], subdir: str = "") -> Path:
        """The media file `stem` with the first extension that exists (else the first extension)."""
        key = (stem, exts, subdir)
        if key not in self._found:  # several queries per video: look each file up once
            self._found[key] = self._find(stem, exts, subdir)
        return self._found[key]

    def _find(self, stem: str, exts: tuple[str, ...], subdir: str) -> Path:
        base = self.media_root / subdir if subdir else self.media_root
        if Path(stem).suffix.lower() in exts:
            return base / stem
        for ext in exts:
            if (base / (stem + ext)).exists():
                return base / (stem + ext)
        return base / (stem + exts[0])

    def media(
        self,
        path: Path,
        type: str,
        width: int | None = None,
        height: int | None = None,
        duration: float | None = None,
        duration_key: str | None = None,
    ) -> tuple[Media | None, str | None]:
        """A Media entry for `path`, filling size/duration from the file when needed and possible.

        Returns (media, None) or (None, reason) when a needed size/duration cannot be had.
        A missing file is counted once per path; a file is probed once however many records use it.
        """
        key = (path, type, width, height, duration, duration_key)
        if key not in self._media:
            self._media[key] = self._make_media(path, type, width, height, duration, duration_key)
        return self._media[key]

    def _make_media(self, path, type, width, height, duration, duration_key) -> tuple[Media | None, str | None]:
        exists = path.exists()
        if not exists and path not in self._seen:
            self._seen.add(path)
            self.report.missing(path)
        if type == "image" and (width is None or height is None) and exists and self.probe:
            try:
                width, height = image_size(path)
            except Exception as e:  # noqa: BLE001 - any unreadable image is one skip reason
                return None, f"unreadable image ({type_name(e)})"
        if type in ("video", "audio") and duration is None:
            # The file itself is the truth (published duration tables are known to be off, e.g.
            # Charades' `length`); the --durations table is the fallback when media are absent.
            if exists and self.probe:
                try:
                    duration = probe_duration(path, type)
                except Exception as e:  # noqa: BLE001
                    return None, f"unreadable {type} ({type_name(e)})"
            if duration is None:
                duration = self.durations.get(duration_key or path.stem)
            if duration is None or not duration > 0:
                return None, f"{type} duration unknown (media missing, no --durations entry)"
        rel = os.path.relpath(path.resolve(), self.out_dir.resolve())
        return Media(type=type, path=rel, width=width, height=height, duration=duration), None

    def sample(self, **fields) -> Sample | Skip:
        """Build and validate a Sample; a validation failure becomes a Skip with the first error."""
        try:
            return Sample(**fields)
        except ValidationError as e:
            err = e.errors()[0]
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            return Skip(f"invalid sample: {msg}", fields.get("id", ""))


def type_name(e: Exception) -> str:
    return type(e).__name__


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as `load_image` will see it: header only, with EXIF rotation applied."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def probe_duration(path: Path, type: str) -> float:
    """Seconds of a video or audio file, through omniground.media."""
    from omniground import media

    if type == "video":
        return float(media.probe_video(path).duration)
    return float(media.load_audio(path).duration)


def load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise FormatError(f"{path}: no such file") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from e


def load_durations(path: Path) -> dict[str, float]:
    """Media id -> seconds from a CSV: `id,duration` columns, or Charades' `id,...,length`."""
    out: dict[str, float] = {}
    if not path.is_file():
        raise FormatError(f"{path}: no such durations CSV")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        key = next((c for c in ("id", "vid", "video", "file", "file_name") if c in cols), None)
        val = next((c for c in ("duration", "length", "seconds") if c in cols), None)
        if key is None or val is None:
            raise FormatError(f"{path}: needs an id column and a duration/length column, has {cols}")
        for row in reader:
            try:
                out[Path(row[key]).stem] = float(row[val])
            except (TypeError, ValueError):
                continue
    return out


def split_from_name(name: str, default: str = "train") -> str:
    """`train`/`val`/`test` from a file name such as charades_sta_test.txt or val_1.json."""
    n = name.lower()
    # Longer names first: Clotho's "evaluation" holds "val" but is its test split.
    for key, split in (("evaluation", "test"), ("development", "train"), ("validation", "val"), ("train", "train"),
                       ("val", "val"), ("test", "test")):
        if key in n:
            return split
    return default


def single_turn(
    ctx: Context,
    task: str,
    record_id: str,
    media: list[Media],
    rng_key: str,
    **slots,
) -> list[dict]:
    """A one-question conversation for `task`, with the placeholders of `media`."""
    q, a = instruct.render(task, ctx.rng(rng_key), **slots)
    return instruct.conversation([(q, a)], [m.type for m in media])


Converter = Callable[[Context], Iterator[Sample | Skip]]


def run_converter(name: str, convert: Converter, ctx: Context, out: Path, progress: bool = True) -> Report:
    """Run one converter to completion and write its samples to `out` (atomically)."""
    report = ctx.report

    def samples() -> Iterator[Sample]:
        items = convert(ctx)
        if progress:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} records"),
                          TimeElapsedColumn(), transient=True) as bar:
                job = bar.add_task(f"converting {name}", total=None)
                for item in items:
                    bar.advance(job)
                    yield from _count(item)
        else:
            for item in items:
                yield from _count(item)

    def _count(item: Sample | Skip) -> Iterator[Sample]:
        if isinstance(item, Skip):
            report.skip(item)
        else:
            report.converted += 1
            report.tasks[item.task] += 1
            yield item

    write_jsonl(out, samples())
    return report
