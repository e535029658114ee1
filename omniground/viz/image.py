"""Boxes drawn on an image: predictions solid with filled labels, ground truth dashed with outlined labels.

Drawn with Pillow at the image's own resolution (only very small or very large images are rescaled),
so a box edge lands on exactly the pixels its coordinates say.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from omniground.grounding import Box
from omniground.viz.common import label_text, phrase_colors, save_png, text_color_on

_FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"  # DejaVu ships with matplotlib: no system font needed


@lru_cache(maxsize=32)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_FONT_DIR / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")), size)


def draw_boxes(
    image: Image.Image | np.ndarray,
    boxes: Sequence[Box],
    out: str | os.PathLike | None = None,
    gt: Sequence[Box] | None = None,
    title: str | None = None,
    *,
    min_side: int = 384,
    max_side: int = 1600,
) -> Image.Image:
    """Draw normalised `boxes` (and ground truth `gt`) on a copy of `image`; save PNG to `out` if given.

    The long side of the result is kept within [min_side, max_side] so labels stay readable on
    thumbnails and files stay small for photos. A header band with the title and a line-style
    legend is added above the image when `title` or `gt` is given. Returns the RGB picture.
    """
    canvas = _fit(image if isinstance(image, Image.Image) else Image.fromarray(image), min_side, max_side)
    w, h = canvas.size
    long_side = max(w, h)
    font = _font(int(np.clip(round(0.024 * long_side), 12, 36)))
    line = max(2, round(long_side / 300))
    gt = list(gt) if gt is not None else None
    colors = phrase_colors([b.phrase for b in boxes] + [b.phrase for b in gt or []])

    draw = ImageDraw.Draw(canvas)
    taken: list[tuple[float, float, float, float]] = []  # label rectangles already placed
    labels = []
    for box in gt or []:  # ground truth first, so predictions are drawn on top of it
        rect = _pixel_rect(box, w, h)
        _dashed_rectangle(draw, rect, colors[box.phrase], line, dash=4 * line)
        labels.append((box, rect, True))
    for box in boxes:
        rect = _pixel_rect(box, w, h)
        draw.rectangle(rect, outline=colors[box.phrase], width=line)
        labels.append((box, rect, False))
    for box, rect, is_gt in labels:  # labels last: a later box's outline never covers an earlier label
        text = _fit_text(label_text(box.phrase, box.score), font, w - 4 * line)
        if text:
            _draw_label(draw, (w, h), text, rect, colors[box.phrase], font, is_gt, taken, line)

    if title is not None or gt is not None:
        canvas = _with_header(canvas, title or "", legend=gt is not None, line=line)
    if out is not None:
        save_png(canvas, out)
    return canvas


def _fit(image: Image.Image, min_side: int, max_side: int) -> Image.Image:
    """RGB copy whose long side is within [min_side, max_side], aspect ratio kept."""
    image = image.convert("RGB")  # also a copy: the caller's image is never drawn on
    long_side = max(image.size)
    target = min(max(long_side, min_side), max_side)
    if target != long_side:
        scale = target / long_side
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def _pixel_rect(box: Box, w: int, h: int) -> tuple[int, int, int, int]:
    """Inclusive pixel corners; a box touching the border is drawn on the last row/column, not off-image."""
    x1, y1, x2, y2 = box.to_pixels(w, h)
    x1, x2 = (int(np.clip(round(v), 0, w - 1)) for v in (x1, x2))
    y1, y2 = (int(np.clip(round(v), 0, h - 1)) for v in (y1, y2))
    return (x1, y1, x2, y2)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, rect, color: str, width: int, dash: int) -> None:
    """Outline of `rect` in dashes, drawn inward like `ImageDraw.rectangle(width=...)`."""
    x1, y1, x2, y2 = rect
    for start in range(x1, x2 + 1, 2 * dash):  # top and bottom edges
        end = min(start + dash - 1, x2)
        draw.rectangle((start, y1, end, min(y1 + width - 1, y2)), fill=color)
        draw.rectangle((start, max(y2 - width + 1, y1), end, y2), fill=color)
    for start in range(y1, y2 + 1, 2 * dash):  # left and right edges
        end = min(start + dash - 1, y2)
        draw.rectangle((x1, start, min(x1 + width - 1, x2), end), fill=color)
        draw.rectangle((max(x2 - width + 1, x1), start, x2, end), fill=color)


def _fit_text(text: str, font: ImageFont.FreeTypeFont, max_width: float) -> str:
    """`text` cut with an ellipsis until it fits `max_width` pixels."""
    if font.getlength(text) <= max_width:
        return text
    while text and font.getlength(text + "…") > max_width:
        text = text[:-1]
    return text.rstrip() + "…" if text else ""


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _draw_label(draw, size, text, rect, color, font, is_gt, taken, line) -> None:
    """Place the label at the first free spot around the box: predictions prefer its top, ground truth its bottom."""
    w, h = size
    pad = max(2, font.size // 6)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    lw, lh = right - left + 2 * pad, bottom - top + 2 * pad
    x1, y1, x2, y2 = rect
    x = min(max(0, x1), max(0, w - lw))
    above, inside_top = y1 - lh, y1 + line
    below, inside_bottom = y2 + 1, y2 - line - lh + 1
    order = (below, inside_bottom, above, inside_top) if is_gt else (above, inside_top, below, inside_bottom)
    spots = [(x, y, x + lw, y + lh) for y in order if 0 <= y and y + lh <= h]
    spot = next((s for s in spots if not any(_overlaps(s, t) for t in taken)), None)
    if spot is None:  # everything is taken: stack under the crowd rather than hide the label
        y = max([0, *(t[3] for t in taken if t[0] < x + lw and x < t[2])])
        spot = (x, min(y, max(0, h - lh)), x + lw, min(y, max(0, h - lh)) + lh)
    taken.append(spot)
    if is_gt:  # outlined tag: reads as "reference", distinct from the filled prediction tags
        draw.rectangle(spot, fill="white", outline=color, width=max(1, line // 2))
        fg = color
    else:
        draw.rectangle(spot, fill=color)
        fg = text_color_on(color)
    draw.text((spot[0] + pad - left, spot[1] + pad - top), text, font=font, fill=fg)


def _with_header(canvas: Image.Image, title: str, legend: bool, line: int) -> Image.Image:
    """Canvas under a white band holding the title and a line-style legend (one row, or two when crowded)."""
    w, h = canvas.size
    font = _font(int(np.clip(round(0.028 * max(w, h)), 12, 40)))
    bold = _font(font.size, bold=True)
    pad = font.size // 2
    row_h = font.size + 2 * pad
    sample = 2 * font.size  # length of the line sample before each legend word
    items = [("predicted", False), ("ground truth", True)] if legend else []
    legend_w = sum(sample + pad + font.getlength(text) + 2 * pad for text, _ in items)
    title = " ".join(title.split())
    one_row = not title or not items or bold.getlength(title) + legend_w + 2 * pad <= w
    band = row_h if one_row else 2 * row_h
    out = Image.new("RGB", (w, h + band), "white")
    out.paste(canvas, (0, band))
    draw = ImageDraw.Draw(out)

    title = _fit_text(title, bold, w - 2 * pad - (legend_w if one_row else 0))
    if title:
        draw.text((pad, row_h // 2), title, font=bold, fill="black", anchor="lm")
    x = w - legend_w if one_row else pad
    y_mid = row_h // 2 if one_row else row_h + row_h // 2
    for text, dashed in items:
        rect = (round(x), y_mid - line // 2, round(x + sample), y_mid - line // 2 + line - 1)
        if dashed:
            _dashed_rectangle(draw, rect, "#333333", line, dash=max(3, sample // 5))
        else:
            draw.rectangle(rect, fill="#333333")
        draw.text((x + sample + pad, y_mid), text, font=font, fill="#333333", anchor="lm")
        x += sample + pad + font.getlength(text) + 2 * pad
    draw.line((0, band - 1, w, band - 1), fill="#cccccc", width=1)
    return out
