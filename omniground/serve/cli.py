"""`omniground serve`, `omniground ground`, `omniground chat`: plain functions with typer annotations.

The top-level CLI registers them with `app.command()(serve)` etc.; `app` below bundles the three for
use on their own. User errors (bad media, missing model, bad flags) raise MediaError / UserError,
which the top-level entry point prints as one line with exit code 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from omniground.errors import UserError
from omniground.media.errors import MediaError

if TYPE_CHECKING:
    from omniground.model.processing_omniground import RequestMeta

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

ModelOption = typer.Option("omniground-tiny", "--model", "-m", help="Shipped model name or checkpoint directory.")
DeviceOption = typer.Option(None, "--device", help="torch device, e.g. cuda or cpu (default: cpu).")


def _load(model: str, device: str | None):
    from omniground.model import load

    with console.status(f"loading {model}…", spinner="dots") if console.is_terminal else _nullcontext():
        return load(model, device=device)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _read_media(path: Path, og, want: str | None = None) -> tuple[str, Any, RequestMeta]:
    """A local file -> (kind, decoded media, meta); `want` may ask for a video's sound track as audio.

    MediaError (one line) for anything unusable or of the wrong kind.
    """
    from omniground import media as M
    from omniground.model.processing_omniground import RequestMeta

    found = M.media_type(path)
    kind = want or found
    if kind != found and not (kind == "audio" and found == "video"):
        raise MediaError(path, f"is {found}, not {kind}")
    meta = RequestMeta(modalities=[kind])
    if kind == "image":
        item = M.load_image(path)
        meta.image_size = tuple(item.size)
    elif kind == "video":
        item = M.sample_frames(path, og.model.config.num_video_frames)
        meta.duration = max(float(item.info.duration), 1e-3)
    else:
        item = M.load_audio(path, sample_rate=og.model.config.audio_sample_rate)
        meta.duration = max(float(item.duration), 1e-3)
    return kind, item, meta


def _grounding_lines(g: dict) -> list[str]:
    """Boxes in pixels, spans in seconds: what a person reads after an answer."""
    lines = []
    for b in g["boxes"]:
        where = "[" + ", ".join(f"{v:.0f}" for v in b["bbox"]) + "] px" if b["bbox"] else (
            "[" + ", ".join(f"{v:.3f}" for v in b["bbox_normalized"]) + "] (normalised)")
        lines.append(f"box  {b['phrase'] or '-'}: {where}" + (f"  score {b['score']:.2f}" if b["score"] is not None else ""))
    for s in g["spans"]:
        where = f"{s['start']:.2f}-{s['end']:.2f} s" if s["start"] is not None else (
            f"{s['span_normalized'][0]:.3f}-{s['span_normalized'][1]:.3f} (fraction)")
        lines.append(f"span {s['phrase'] or '-'}: {where}" + (f"  score {s['score']:.2f}" if s["score"] is not None else ""))
    return lines


def ground(
    media: Path = typer.Argument(..., help="An image, video or audio file."),
    query: str = typer.Argument(..., help='What to find, e.g. "the dog" or "the bell rings".'),
    model: str = ModelOption,
    as_json: bool = typer.Option(False, "--json", help="Print the answer and its grounding as JSON."),
    save_viz: Optional[Path] = typer.Option(None, "--save-viz", help="Write a PNG with the boxes / spans drawn."),
    max_tokens: int = typer.Option(128, min=1, help="Longest answer, in tokens."),
    min_score: float = typer.Option(
        0.0, "--min-score", min=0.0, max=1.0,
        help="Drop boxes / spans scored below this (a pointed one's score is its pointer's confidence, which "
        "leaves 'nothing here' its share): the model always answers with a place, and with 0.5 omniground-tiny "
        "drops 87% of its boxes for absent things and 3% of its right ones (0.3: 78% and 1%)."),
    device: Optional[str] = DeviceOption,
) -> None:
    """Find where (boxes, pixels) or when (spans, seconds) the query is in the media."""
    from omniground.serve.generation import Row, grounding_json, run_batch

    if not query.strip():
        raise UserError("the query is empty")
    from omniground import media as M

    M.media_type(media)  # bad media is reported before the model is loaded
    og = _load(model, device)
    kind, item, meta = _read_media(media, og)
    prompt = og.processor.grounding_prompt(kind, query)
    prefix = og.processor.grounding_answer_prefix(kind, query)
    row = Row([{"role": "user", "content": prompt}], [item], meta, max_tokens, answer_prefix=prefix)
    answer = run_batch(og, [row])[0]
    # A grounding query names its own phrase.
    answer.boxes = [b.with_phrase(query) for b in answer.boxes]
    answer.spans = [s.with_phrase(query) for s in answer.spans]
    _drop_scored_below(answer, min_score)
    g = grounding_json(answer)
    if save_viz is not None:
        _save_viz(save_viz, kind, item, answer, title=f"{media.name}: {query}")
    if as_json:
        print(json.dumps({"media": str(media), "type": kind, "query": query, "answer": answer.text, "grounding": g}))
        return
    console.print(f"[bold]answer:[/bold] {escape(answer.text) or '(empty)'}")
    nothing = f"nothing grounded with score >= {min_score:g}" if min_score > 0 else "nothing grounded in the answer"
    for line in _grounding_lines(g) or [nothing]:
        console.print("  " + escape(line))
    if save_viz is not None:
        console.print(f"saved {save_viz}")


def _drop_scored_below(answer, min_score: float) -> None:
    """Drop the answer's boxes and spans scored below `min_score`, with their pixels / seconds; its text stays
    as the model wrote it."""

    def kept(items: list, measured: list) -> tuple[list, list]:
        keep = [i for i, x in enumerate(items) if x.score is None or x.score >= min_score]
        return [items[i] for i in keep], [measured[i] for i in keep] if len(measured) == len(items) else measured

    answer.boxes, answer.boxes_pixels = kept(answer.boxes, answer.boxes_pixels)
    answer.spans, answer.spans_seconds = kept(answer.spans, answer.spans_seconds)


def _save_viz(out: Path, kind: str, item, answer, title: str) -> None:
    from omniground import viz

    if kind == "image":
        viz.draw_boxes(item, answer.boxes, out=out, title=title)
    elif kind == "video":
        viz.draw_video_spans(item.frames, item.timestamps, answer.duration, answer.spans, out=out, title=title)
    else:
        viz.draw_audio_spans(item.samples, item.sample_rate, answer.spans, out=out, title=title)


CHAT_HELP = """commands: /image PATH, /video PATH, /audio PATH attach media to your next message;
/clear forgets the conversation; /quit (or Ctrl-D) leaves."""


def chat(
    model: str = ModelOption,
    max_tokens: int = typer.Option(256, min=1, help="Longest answer, in tokens."),
    temperature: float = typer.Option(0.0, min=0.0, max=2.0, help="0 = greedy."),
    device: Optional[str] = DeviceOption,
) -> None:
    """Chat about images, video and audio in the terminal; answers stream, boxes/spans shown in pixels/seconds."""
    from omniground.model.processing_omniground import RequestMeta
    from omniground.serve.generation import Row, Sampling, grounding_json, run_batch

    og = _load(model, device)
    messages: list[dict] = []
    media: list[Any] = []
    meta = RequestMeta()
    attached: list[str] = []  # placeholders waiting for the next user message
    console.print(f"[bold]omniground chat[/bold] ({escape(model)}). {CHAT_HELP}")
    while True:
        try:
            line = console.input("[bold cyan]you>[/bold cyan] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if not line:
            continue
        if line.startswith("/"):
            command, _, arg = line.partition(" ")
            if command in ("/quit", "/exit"):
                return
            if command == "/clear":
                messages, media, meta, attached = [], [], RequestMeta(), []
                console.print("conversation cleared")
            elif command in ("/image", "/video", "/audio"):
                path = Path(os.path.expanduser(arg.strip().strip("'\"")))
                try:
                    kind, item, item_meta = _read_media(path, og, want=command[1:])
                except MediaError as e:
                    err_console.print(f"[red]error:[/red] {escape(str(e))}")
                    continue
                media.append(item)
                attached.append(f"<{kind}>")
                meta.modalities.append(kind)
                meta.image_size = meta.image_size or item_meta.image_size
                meta.duration = meta.duration or item_meta.duration
                console.print(f"attached {kind} {escape(str(path))}; it goes with your next message")
            elif command == "/help":
                console.print(CHAT_HELP)
            else:
                err_console.print(f"[red]unknown command {escape(command)}[/red]. {CHAT_HELP}")
            continue
        text = line.replace("<image>", "< image>").replace("<video>", "< video>").replace("<audio>", "< audio>")
        turn = {"role": "user", "content": "\n".join([*attached, text])}
        console.print("[bold green]omniground>[/bold green] ", end="")
        row = Row([*messages, turn], list(media), meta, max_tokens, sampling=Sampling(temperature=temperature),
                  on_text=lambda piece: console.out(piece, end="", highlight=False))
        try:
            answer = run_batch(og, [row])[0]
        except KeyboardInterrupt:
            console.print("\n[yellow]interrupted[/yellow]")
            continue
        console.print()
        messages += [turn, {"role": "assistant", "content": answer.text}]
        attached = []
        for out in _grounding_lines(grounding_json(answer)):
            console.print("  " + escape(out), style="dim")


def serve(
    model: str = ModelOption,
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, min=0, max=65535),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="OMNIGROUND_API_KEY",
                                          help="Require 'Authorization: Bearer KEY' on /v1/*."),
    allow_media_dir: Optional[Path] = typer.Option(None, "--allow-media-dir",
                                                   help="Let requests name files inside this directory."),
    served_model_name: Optional[str] = typer.Option(None, help="Model id clients use (default: the model's name)."),
    max_batch_size: int = typer.Option(16, min=1, help="Most rows in one forward pass."),
    max_wait_ms: float = typer.Option(10.0, min=0.0, help="How long an idle model waits for a batch to fill."),
    timeout: float = typer.Option(120.0, min=0.1, help="Per-request time limit, seconds."),
    max_request_mb: float = typer.Option(32.0, min=0.001, help="Largest request body, media included, MiB."),
    device: Optional[str] = DeviceOption,
) -> None:
    """Serve an OpenAI-compatible API (with structured grounding), a web page, /health and /metrics."""
    import uvicorn

    from omniground.serve.app import ServeSettings, create_app

    if allow_media_dir is not None and not allow_media_dir.is_dir():
        raise UserError(f"--allow-media-dir {allow_media_dir}: not a directory")
    og = _load(model, device)
    settings = ServeSettings(
        model_name=served_model_name or Path(model.rstrip("/")).name,
        api_key=api_key or None,
        allow_media_dir=allow_media_dir,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        request_timeout_s=timeout,
        max_request_bytes=int(max_request_mb * 1024 * 1024),
    )
    app = create_app(og, settings)
    where = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}"
    console.print(f"serving [bold]{escape(settings.model_name)}[/bold] at {where}/ (API: {where}/v1)"
                  + ("" if settings.api_key else "  [yellow]no --api-key: anyone who can connect may use it[/yellow]"))
    uvicorn.run(app, host=host, port=port, log_level="info")


app = typer.Typer(help="Serving and interactive use.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
app.command()(serve)
app.command()(ground)
app.command()(chat)
