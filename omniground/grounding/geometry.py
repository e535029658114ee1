"""Boxes and spans as values, their frames (pixels, padded square, seconds) and overlap measures.

Internally a box is always normalised to 0..1 of the *original* image and a span is always a
fraction 0..1 of the media's duration. Pixels and seconds exist only at the boundaries, through
the explicit conversions below, so no caller ever has to guess which frame a number is in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

# Tolerance for values a hair outside 0..1 (e.g. 1.0000001 after a pixel round trip).
_EPS = 1e-6


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box, corners normalised to 0..1 of the original image (x right, y down)."""

    x1: float
    y1: float
    x2: float
    y2: float
    phrase: str = ""
    score: float | None = None

    def __post_init__(self) -> None:
        problem = box_problem(self.x1, self.y1, self.x2, self.y2)
        if problem:
            raise ValueError(problem)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def area(self) -> float:
        return (self.x2 - self.x1) * (self.y2 - self.y1)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)

    def with_phrase(self, phrase: str) -> "Box":
        return replace(self, phrase=phrase)

    def to_pixels(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Corners in pixels of an image of `width` x `height`."""
        return (self.x1 * width, self.y1 * height, self.x2 * width, self.y2 * height)

    @classmethod
    def from_pixels(
        cls, xyxy: Sequence[float], width: int, height: int, phrase: str = "", score: float | None = None
    ) -> "Box":
        """Box from pixel corners; corners outside the image are clipped to it."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        return cls(
            _clip01(x1 / width), _clip01(y1 / height), _clip01(x2 / width), _clip01(y2 / height), phrase, score
        )

    def to_padded_square(self, width: int, height: int) -> "Box":
        """This box in the frame of the image padded to a centred square (the original LEGO frame)."""
        side = max(width, height)
        ox, oy = (side - width) / 2, (side - height) / 2
        x1, y1, x2, y2 = self.to_pixels(width, height)
        return replace(self, x1=(x1 + ox) / side, y1=(y1 + oy) / side, x2=(x2 + ox) / side, y2=(y2 + oy) / side)

    @classmethod
    def from_padded_square(
        cls, xyxy: Sequence[float], width: int, height: int, phrase: str = "", score: float | None = None
    ) -> "Box":
        """Box from 0..1 corners in the padded-square frame, mapped back to the original image (clipped)."""
        side = max(width, height)
        ox, oy = (side - width) / 2, (side - height) / 2
        x1, y1, x2, y2 = (float(v) * side for v in xyxy)
        return cls.from_pixels((x1 - ox, y1 - oy, x2 - ox, y2 - oy), width, height, phrase, score)


@dataclass(frozen=True)
class Span:
    """A time interval as fractions 0..1 of the media's duration."""

    start: float
    end: float
    phrase: str = ""
    score: float | None = None

    def __post_init__(self) -> None:
        problem = span_problem(self.start, self.end)
        if problem:
            raise ValueError(problem)

    @property
    def length(self) -> float:
        return self.end - self.start

    def with_phrase(self, phrase: str) -> "Span":
        return replace(self, phrase=phrase)

    def to_seconds(self, duration: float) -> tuple[float, float]:
        return (self.start * duration, self.end * duration)

    @classmethod
    def from_seconds(
        cls, start: float, end: float, duration: float, phrase: str = "", score: float | None = None
    ) -> "Span":
        """Span from seconds; times outside 0..duration are clipped to it."""
        if not _finite(duration) or duration <= 0:
            raise ValueError(f"duration must be positive, got {duration}")
        return cls(_clip01(start / duration), _clip01(end / duration), phrase, score)


def _clip01(v: float) -> float:
    return min(1.0, max(0.0, v)) if math.isfinite(v) else v


def box_problem(x1: float, y1: float, x2: float, y2: float) -> str | None:
    """Why these normalised corners are not a valid box, or None."""
    if not _finite(x1, y1, x2, y2):
        return "box has a non-finite coordinate"
    if min(x1, y1, x2, y2) < -_EPS or max(x1, y1, x2, y2) > 1 + _EPS:
        return "box coordinate outside 0..1"
    if x2 < x1 or y2 < y1:
        return "box corners reversed (x2<x1 or y2<y1)"
    return None


def span_problem(start: float, end: float) -> str | None:
    """Why these fractions are not a valid span, or None."""
    if not _finite(start, end):
        return "span has a non-finite time"
    if min(start, end) < -_EPS or max(start, end) > 1 + _EPS:
        return "span time outside 0..1 of the duration"
    if end < start:
        return "span end before start"
    return None


# ---------------------------------------------------------------------------------------------
# Overlap. Degenerate (zero-size) intervals: identical ones overlap fully, others not at all.


def _interval_iou(a1: float, a2: float, b1: float, b2: float) -> float:
    inter = max(0.0, min(a2, b2) - max(a1, b1))
    union = (a2 - a1) + (b2 - b1) - inter
    if union <= 0:
        return 1.0 if (a1, a2) == (b1, b2) else 0.0
    return min(1.0, max(0.0, inter / union))


def _xyxy(b: Box | Sequence[float]) -> tuple[float, float, float, float]:
    return b.xyxy if isinstance(b, Box) else tuple(float(v) for v in b)  # type: ignore[return-value]


def _se(s: Span | Sequence[float]) -> tuple[float, float]:
    return (s.start, s.end) if isinstance(s, Span) else (float(s[0]), float(s[1]))


def box_iou(a: Box | Sequence[float], b: Box | Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes (any common frame)."""
    ax1, ay1, ax2, ay2 = _xyxy(a)
    bx1, by1, bx2, by2 = _xyxy(b)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    if union <= 0:
        return 1.0 if (ax1, ay1, ax2, ay2) == (bx1, by1, bx2, by2) else 0.0
    return min(1.0, max(0.0, inter / union))


def box_giou(a: Box | Sequence[float], b: Box | Sequence[float]) -> float:
    """Generalised IoU (Rezatofighi et al. 2019): IoU minus the empty share of the enclosing box; in [-1, 1]."""
    ax1, ay1, ax2, ay2 = _xyxy(a)
    bx1, by1, bx2, by2 = _xyxy(b)
    iou = box_iou(a, b)
    hull = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
    if hull <= 0:
        return iou
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - iw * ih
    return iou - (hull - union) / hull


def span_iou(a: Span | Sequence[float], b: Span | Sequence[float]) -> float:
    """Temporal IoU of two [start, end] intervals (any common unit)."""
    return _interval_iou(*_se(a), *_se(b))


def span_giou(a: Span | Sequence[float], b: Span | Sequence[float]) -> float:
    """Generalised temporal IoU; in [-1, 1]."""
    a1, a2 = _se(a)
    b1, b2 = _se(b)
    hull = max(a2, b2) - min(a1, b1)
    iou = span_iou(a, b)
    if hull <= 0:
        return iou
    union = (a2 - a1) + (b2 - b1) - max(0.0, min(a2, b2) - max(a1, b1))
    return iou - (hull - union) / hull
