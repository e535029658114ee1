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

from omniground.errors import UserError
from omniground.eval.cli import app as eval_app

app = typer.Typer(
    name="omniground",
    help="Multi-modal grounding: boxes on images, time spans on video and audio, chat about the media.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _not_yet(command: str, issue: str) -> None:
    err_console.print(f"[red]omniground {command}: not available yet ({issue} is still open).[/red]")
    raise typer.Exit(2)


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


@app.command()
def ground(
    media: Path = typer.Argument(..., help="An image, video or audio file."),
    query: str = typer.Argument(..., help='What to find, e.g. "the dog" or "when does the bell ring".'),
) -> None:
    """Find where (box) or when (span) the query is in the media."""
    from omniground import media as M

    M.media_type(media)  # bad media is reported before anything else
    _not_yet("ground", "the Model issue")


@app.command()
def chat() -> None:
    """Chat about images, video and audio in the terminal."""
    _not_yet("chat", "the Serving issue")


@app.command()
def serve() -> None:
    """Serve an OpenAI-compatible API and a web page."""
    _not_yet("serve", "the Serving issue")


@app.command()
def train() -> None:
    """Train the three stages (alignment, grounding, instructions)."""
    _not_yet("train", "the Training issue")


app.add_typer(eval_app, name="eval")


@app.command()
def data() -> None:
    """Generate, convert and scrub training data."""
    _not_yet("data", "the Data engine issue")


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
