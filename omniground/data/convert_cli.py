"""`omniground data convert --format F INPUT... --media-root DIR --out FILE.jsonl`.

Public releases to the omniground schema, with a summary a user can act on: how many samples were
written, how many source records were skipped and why, and which media files were missing.
The lead mounts it with `data_app.command("convert")(convert)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from omniground.data.formats import FORMATS, FormatError, Report
from omniground.data.formats import convert as run_convert

_FORMAT_HELP = "; ".join(f"{name}: {f.inputs}" for name, f in FORMATS.items())


def convert(
    inputs: List[Path] = typer.Argument(..., help="Annotation file(s) or folder, as --format expects."),
    format: str = typer.Option(..., "--format", "-f", help=f"Source format. {_FORMAT_HELP}."),
    out: Path = typer.Option(..., "--out", "-o", help="Schema JSONL to write; media paths are relative to it."),
    media_root: Path = typer.Option(Path("."), "--media-root", help="Folder of the release's images/videos/audio."),
    durations: Optional[Path] = typer.Option(
        None, help="CSV of media id -> seconds (`id,duration`, or Charades' `id,...,length`) for absent media."),
    task: Optional[str] = typer.Option(
        None, help="rec|reg (box formats); video_grounding|dialogue (activitynet); any task (llava, groundinggpt)."),
    split: Optional[str] = typer.Option(None, help="Split name to write (default: from the file name or the release)."),
    split_by: Optional[str] = typer.Option(None, help="RefCOCO* refs file: unc, umd or google (default: unc; umd)."),
    instances: Optional[Path] = typer.Option(None, help="RefCOCO*: COCO instances.json (default: beside the refs)."),
    image_data: Optional[Path] = typer.Option(None, help="Visual Genome: image_data.json (default: beside regions)."),
    box_frame: Optional[str] = typer.Option(None, help="llava: boxes relative to the `image` (default) or `padded`."),
    image_root: Optional[Path] = typer.Option(None, help="llava/groundinggpt: image folder (else --media-root)."),
    video_root: Optional[Path] = typer.Option(None, help="llava/groundinggpt: video folder (else --media-root)."),
    audio_root: Optional[Path] = typer.Option(None, help="llava/groundinggpt: sound folder (else --media-root)."),
    stage: Optional[int] = typer.Option(None, min=1, max=3, help="Training stage to record (default: per task)."),
    license: Optional[str] = typer.Option(None, help="Override the licence string recorded in every sample."),
    seed: int = typer.Option(0, help="Seed for the question phrasings (the same record gets the same phrasing)."),
    probe: bool = typer.Option(True, help="Read sizes/durations from media present (--no-probe: trust annotations)."),
    report_json: Optional[Path] = typer.Option(None, help="Also write the summary as JSON here."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Convert a public dataset release into omniground's sample JSONL."""
    if box_frame not in (None, "image", "padded"):
        raise FormatError(f"--box-frame must be image or padded, not {box_frame!r}")
    if durations is not None and not durations.is_file():
        raise FormatError(f"{durations}: no such durations CSV")
    options = dict(task=task, split=split, split_by=split_by, instances=instances, image_data=image_data,
                   box_frame=box_frame, image_root=image_root, video_root=video_root, audio_root=audio_root,
                   stage=stage, license=license)
    report = run_convert(format, inputs, media_root, out, seed=seed, durations=durations, probe=probe,
                         progress=progress, **options)
    print_report(report, out)
    if report_json is not None:
        from omniground.files import atomic_output

        with atomic_output(report_json) as tmp:
            tmp.write_text(json.dumps(report.as_dict() | {"missing_examples": report.missing_examples,
                                                          "skip_examples": report.skip_examples}, indent=2))


def print_report(report: Report, out: Path) -> None:
    """The summary: written, skipped by reason (with a first example), missing media."""
    table = Table(title=f"convert {report.format} -> {out}", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("first example", overflow="fold")
    tasks = ", ".join(f"{k}: {v}" for k, v in report.tasks.items())
    table.add_row("[green]converted[/green]", str(report.converted), tasks)
    for reason, n in report.skipped.most_common():
        table.add_row(f"[yellow]skipped: {reason}[/yellow]", str(n), str(report.skip_examples.get(reason, "")))
    table.add_row("[red]missing media files[/red]" if report.missing_media else "missing media files",
                  str(report.missing_media), ", ".join(report.missing_examples[:2]))
    Console(stderr=True).print(table)


app = typer.Typer(help="Convert public dataset releases.", no_args_is_help=True)
app.command("convert")(convert)
