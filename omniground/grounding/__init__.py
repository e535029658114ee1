"""The grounding language: boxes and spans as values, as model text, and how much two of them overlap.

Every other part of omniground writes and reads locations only through this package.
"""

from omniground.grounding.geometry import Box, Span, box_giou, box_iou, span_giou, span_iou
from omniground.grounding.text import Located, ParseResult, format_box, format_span, ground_phrase, parse, replace_located

__all__ = [
    "Box",
    "Span",
    "ParseResult",
    "Located",
    "replace_located",
    "box_iou",
    "box_giou",
    "span_iou",
    "span_giou",
    "format_box",
    "format_span",
    "ground_phrase",
    "parse",
]
