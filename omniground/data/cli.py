"""`omniground data`: generate exact-label training data (`synth`), rewrite dialogues with a teacher LLM (`teach`).

Errors a user can cause (bad flags, a missing Debian asset, an unreachable teacher) are `UserError`s:
the top-level CLI prints them as one line and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from omniground.errors import UserError

app = typer.Typer(help="Generate, convert and scrub training data.", no_args_is_help=True)
console = Console()


@app.callback()
def _group() -> None:
    """Generate, convert and scrub training data."""


def _floats(text: str, flag: str, n: int) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise UserError(f"{flag} takes {n} comma-separated numbers, got {text!r}")
    return values


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers, got {text!r}") from None


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Folder for {split}.jsonl and media/ (created)."),
    n: Optional[int] = typer.Option(None, "--n", min=0, help="Samples in all, shared evenly by image/video/audio."),
    images: Optional[int] = typer.Option(None, "--images", min=0, help="Image samples (overrides the --n share)."),
    videos: Optional[int] = typer.Option(None, "--videos", min=0, help="Video samples (overrides the --n share)."),
    audios: Optional[int] = typer.Option(None, "--audios", min=0, help="Audio samples (overrides the --n share)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Same seed, same data, for any --workers."),
    split: str = typer.Option("train", "--split", help="train, val, test, or unseen (held-out combinations)."),
    stages: str = typer.Option("1,2,3", "--stages", help="Stages to make: 1 captions, 2 grounding, 3 dialogue."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes."),
    image_size: int = typer.Option(384, "--image-size", help="Longest image side in pixels."),
    image_format: str = typer.Option("jpg", "--image-format", help="jpg or png (png keeps pixels exact)."),
    video_size: int = typer.Option(160, "--video-size", help="Longest video frame side in pixels."),
    video_seconds: str = typer.Option("4,20", "--video-seconds", help="MIN,MAX clip length in seconds."),
    fps: str = typer.Option("6,8,10,12,15,24", "--fps", help="Frame rates a clip draws from."),
    audio_seconds: str = typer.Option("4,20", "--audio-seconds", help="MIN,MAX audio length in seconds."),
    audio_format: str = typer.Option("wav", "--audio-format", help="wav or flac."),
    teacher_url: Optional[str] = typer.Option(
        None, "--teacher-url", help="OpenAI-compatible API base that rewrites the stage-3 dialogues (default: off)."
    ),
    teacher_model: str = typer.Option("default", "--teacher-model", help="Model name at the teacher endpoint."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Scenes, videos and audio timelines from packaged pictures and sounds, with labels exact by construction.

    With neither --n nor a per-modality count, makes 100 samples. Writes OUT/SPLIT.jsonl (schema
    records, media paths relative to OUT) and OUT/media/.
    """
    from omniground.data.synth.build import run
    from omniground.data.synth.config import SynthConfig, split_count

    overrides = {"image": images, "video": videos, "audio": audios}
    if n is None and all(v is None for v in overrides.values()):
        n = 100
    cfg = SynthConfig(
        out=out,
        counts=split_count(n or 0, overrides),
        seed=seed,
        split=split,
        workers=workers,
        stages=_ints(stages, "--stages"),
        image_size=image_size,
        image_format=image_format,
        video_size=video_size,
        video_seconds=_floats(video_seconds, "--video-seconds", 2),
        fps=_ints(fps, "--fps"),
        audio_seconds=_floats(audio_seconds, "--audio-seconds", 2),
        audio_format=audio_format,
    )
    teacher = _teacher(teacher_url, teacher_model, None) if teacher_url else None  # a bad URL fails before any work
    report = run(cfg, progress=progress)
    _print_summary(report)
    if teacher is not None:
        from omniground.data.teacher import teach_file

        _print_teach(teach_file(report.path, report.path, teacher, {"dialogue"}, progress=progress))


@app.command()
def teach(
    data: Path = typer.Option(..., "--in", help="Schema JSONL whose dialogues to rewrite."),
    out: Path = typer.Option(..., "--out", help="Where to write the result (may equal --in)."),
    teacher_url: str = typer.Option(..., "--teacher-url", help="OpenAI-compatible API base, e.g. http://host:8000/v1."),
    teacher_model: str = typer.Option("default", "--teacher-model", help="Model name at the endpoint."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="OMNIGROUND_TEACHER_API_KEY"),
    tasks: str = typer.Option("dialogue", "--tasks", help="Comma list of tasks to rewrite, or 'all'."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests in flight."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Rewrite dialogues with a teacher LLM; answers that lose or alter a box or span are rejected (original kept)."""
    from omniground.data.teacher import teach_file

    if not data.is_file():
        raise UserError(f"{data}: no such JSONL file")
    chosen = None if tasks == "all" else {t.strip() for t in tasks.split(",") if t.strip()}
    report = teach_file(data, out, _teacher(teacher_url, teacher_model, api_key), chosen, progress, concurrency)
    _print_teach(report)
    console.print(f"wrote {out}")


def _teacher(url: str, model: str, api_key: Optional[str]):
    from omniground.data.teacher import Teacher

    return Teacher(url, model=model, api_key=api_key)


def _print_teach(report) -> None:
    table = Table(title=f"teacher: {report.accepted} dialogues rewritten")
    table.add_column("outcome")
    table.add_column("samples", justify="right")
    for verdict, count in sorted(report.counts.items()):
        table.add_row(verdict, str(count))
    console.print(table)


def _print_summary(report) -> None:
    table = Table(title=f"{report.total} samples in {report.seconds:.1f} s -> {report.path}")
    for col in ("modality", "task", "stage", "samples"):
        table.add_column(col, justify="right" if col == "samples" else "left")
    for (modality, task, stage), count in sorted(report.counts.items()):
        table.add_row(modality, task, str(stage), str(count))
    console.print(table)
    rate = report.total / report.seconds if report.seconds > 0 else float("inf")
    console.print(f"{rate:.1f} samples/s; media under {report.path.parent / 'media'}")


# --------------------------------------------------------------------------------------------------
# Other engineers' `data` commands are registered here by the lead (convert: omniground/data/convert_cli.py,
# scrub: omniground/data/scrub.py), e.g.:
#     from omniground.data.convert_cli import convert
#     app.command()(convert)
# ---- registered commands (lead) ------------------------------------------------------------------
