"""What every picture shares: phrase colours, label text, and turning a picture into PNG (file or bytes).

A picture is either a `PIL.Image.Image` (boxes on an image) or a matplotlib `Figure` built without
pyplot (timelines), so no global figure state is ever created or leaked between calls.
"""

from __future__ import annotations

import io
import os
from typing import Iterable, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from omniground.files import atomic_output

Picture = Union[Image.Image, Figure]

# Qualitative palette (matplotlib "tab10"): colour-blind friendlier than random hues and distinct
# enough that ten phrases never share a colour; beyond ten the colours repeat.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip

# A label longer than this is cut with an ellipsis: a caption, not a paragraph, belongs on a picture.
MAX_LABEL_CHARS = 48


def phrase_colors(phrases: Iterable[str]) -> dict[str, str]:
    """One colour per distinct phrase, in order of first appearance (so pred and gt of a phrase match)."""
    colors: dict[str, str] = {}
    for phrase in phrases:
        if phrase not in colors:
            colors[phrase] = PALETTE[len(colors) % len(PALETTE)]
    return colors


def label_text(phrase: str, score: float | None = None, max_chars: int = MAX_LABEL_CHARS) -> str:
    """`phrase 0.87`, single line, cut to `max_chars` with an ellipsis."""
    text = " ".join(phrase.split())  # newlines/tabs in a phrase would break a one-line label
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    if score is not None:
        text = f"{text} {score:.2f}" if text else f"{score:.2f}"
    return text


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return (int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16))


def text_color_on(background: str) -> str:
    """Black or white, whichever reads better on `background` (WCAG relative luminance)."""

    def linear(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in hex_to_rgb(background))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#000000" if luminance > 0.179 else "#ffffff"


def format_seconds(t: float, long: bool) -> str:
    """`12.3s` for short media, `m:ss` (or `h:mm:ss`) once minutes matter."""
    if not long:
        return f"{t:.1f}s"
    t = int(round(t))
    h, rem = divmod(t, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def new_figure(width_in: float, height_in: float, dpi: int = 100) -> Figure:
    """A figure on its own Agg canvas: nothing registered with pyplot, freed when the last reference goes."""
    fig = Figure(figsize=(width_in, height_in), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def figure_to_image(fig: Figure) -> Image.Image:
    """The figure's pixels as an RGB image, exactly as `save_png` would write them."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


def _write_png(picture: Picture, target) -> None:
    if isinstance(picture, Figure):
        # Same dpi as the canvas and no tight bbox: saved pixels match the figure's own transforms.
        picture.savefig(target, format="png", dpi=picture.dpi, facecolor="white")
    elif isinstance(picture, Image.Image):
        picture.save(target, format="PNG")
    else:
        raise TypeError(f"expected a PIL image or a matplotlib Figure, got {type(picture).__name__}")


def save_png(picture: Picture, path: str | os.PathLike) -> None:
    """Write `picture` as PNG at `path`; on any failure nothing (not even a partial file) is left there."""
    with atomic_output(path) as tmp:
        _write_png(picture, tmp)


def to_png_bytes(picture: Picture) -> bytes:
    """PNG-encoded bytes of `picture` (for the web API and self-contained HTML reports)."""
    buffer = io.BytesIO()
    _write_png(picture, buffer)
    return buffer.getvalue()
