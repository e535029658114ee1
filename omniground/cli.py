"""The `omniground` command line: one entry point, a sub-command per job.

Errors a user can cause (bad media, bad flags, missing model) end as one red line and exit code 2,
never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from omniground.data import convert_cli, scrub
from omniground.data.cli import app as data_app
from omniground.errors import UserError
from omniground.eval.cli import app as eval_app
from omniground.serve import cli as serve_cli
from omniground.train import cli as train_cli

app = typer.Typer(
    name="omniground",
    help="Multi-modal grounding: boxes on images, time spans on video and audio, chat about the media.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


@app.command()
def inspect(
    media: Path = typer.Argument(..., help="An image, video or audio file."),
    frames: int = typer.Option(8, min=1, help="Video frames to sample uniformly."),
    window: float = typer.Option(2.0, min=0.1, help="Audio window length in seconds."),
    save_viz: Optional[Path] = typer.Option(None, "--save-viz", help="Write a PNG of what the model would see."),
    as_json: bool = typer.Option(False, "--json", help="Print the facts as JSON."),
) -> None:
    """Show what omniground reads from a media file: size, duration, sampled frame times, audio windows."""
    from omniground import media as M

    kind = M.media_type(media)
    facts: dict = {"path": str(media), "type": kind}
    if kind == "image":
        image = M.load_image(media)
        facts.update(width=image.width, height=image.height)
        if save_viz:
            from omniground.viz import draw_boxes

            draw_boxes(image, [], out=save_viz, title=media.name)
    elif kind == "video":
        info = M.probe_video(media)
        clip = M.sample_frames(media, frames)
        facts.update(
            width=info.width, height=info.height, duration=round(info.duration, 3), fps=round(info.fps, 3),
            frames=info.num_frames, has_audio=info.has_audio,
            sampled_at=[round(float(t), 3) for t in clip.timestamps],
        )
        if save_viz:
            from omniground.viz import draw_video_spans

            draw_video_spans(clip.frames, clip.timestamps, info.duration, [], out=save_viz, title=media.name)
    else:
        audio = M.load_audio(media)
        _, starts = M.audio_windows(audio, window)
        facts.update(duration=round(audio.duration, 3), sample_rate=audio.sample_rate,
                     windows=len(starts), window_starts=[round(float(s), 3) for s in starts])
        if save_viz:
            from omniground.viz import draw_audio_spans

            draw_audio_spans(audio.samples, audio.sample_rate, [], out=save_viz, title=media.name)
    if as_json:
        print(json.dumps(facts))
        return
    table = Table(show_header=False, box=None)
    for k, v in facts.items():
        table.add_row(f"[bold]{k}[/bold]", str(v))
    console.print(table)
    if save_viz:
        console.print(f"saved {save_viz}")


# Sub-commands live beside the code they drive; this file only assembles them.
app.command()(serve_cli.ground)
app.command()(serve_cli.chat)
app.command()(serve_cli.serve)
app.command()(train_cli.train)
data_app.command()(convert_cli.convert)
data_app.command()(scrub.scrub)
app.add_typer(data_app, name="data")
app.add_typer(eval_app, name="eval")


def main() -> None:
    """Console-script entry: user-caused errors become one line on stderr and exit code 2."""
    try:
        app()
    except UserError as e:  # MediaError is one
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/red]")
        sys.exit(130)


if __name__ == "__main__":
    main()
