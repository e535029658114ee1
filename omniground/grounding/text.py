"""Boxes and spans in model text: writing our own format, reading ours and other systems'.

Our format is the original LEGO/GroundingGPT one: a box is `[x1,y1,x2,y2]` with corners normalised
to 0..1 (three decimals) written right after the phrase it grounds, several boxes for one phrase
back to back (`[..][..]`); a span is `{t1,t2}`, fractions of the duration with two decimals.

The parser also reads what other systems emit so that the evaluator can score them: pixel boxes,
Qwen-VL 0..1000 integers (`<box>(x1,y1),(x2,y2)</box>` and plain `[..]`), Qwen2.5-VL
`{"bbox_2d": [...], "label": ...}` JSON, and spans in seconds (`12.5s - 17.0s`,
`from 00:12 to 00:17`). It never raises on model text: it returns what is valid plus a problem list.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal, Sequence

from omniground.grounding.geometry import Box, Span, box_problem, span_problem

BoxFrame = Literal["auto", "norm1", "norm1000", "pixel"]
SpanUnit = Literal["auto", "fraction", "seconds"]

BOX_DECIMALS = 3
SPAN_DECIMALS = 2
DEFAULT_MAX_ITEMS = 1000


def format_box(box: Box | Sequence[float]) -> str:
    """`[0.100,0.200,0.300,0.400]`: our box text, normalised corners with three decimals."""
    xyxy = box.xyxy if isinstance(box, Box) else box
    return "[" + ",".join(f"{float(v):.{BOX_DECIMALS}f}" for v in xyxy) + "]"


def format_span(span: Span | Sequence[float]) -> str:
    """`{0.16,0.36}`: our span text, fractions of the duration with two decimals."""
    se = (span.start, span.end) if isinstance(span, Span) else span
    return "{" + ",".join(f"{float(v):.{SPAN_DECIMALS}f}" for v in se) + "}"


def replace_located(text: str, located: Iterable["Located"], write: Callable[["Located"], str]) -> str:
    """`text` with each located notation replaced by `write(located)`: how converters and the processor
    re-express locations (another frame, location tokens) without touching the words around them."""
    out, pos = [], 0
    for loc in sorted(located, key=lambda x: x.start):
        out += [text[pos : loc.start], write(loc)]
        pos = loc.end
    return "".join(out) + text[pos:]


def ground_phrase(phrase: str, items: Iterable[Box | Span]) -> str:
    """`a red car[..][..]`: a phrase followed by its boxes or spans."""
    return phrase + "".join(format_box(i) if isinstance(i, Box) else format_span(i) for i in items)


@dataclass(frozen=True)
class Located:
    """A box or span and the character offsets of its notation, for rewriting text around locations."""

    start: int
    end: int
    item: Box | Span


@dataclass
class ParseResult:
    """Everything valid found in a text, in text order, plus why the rest was dropped."""

    boxes: list[Box] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    plain_text: str = ""  # the text with every box/span notation removed
    located: list[Located] = field(default_factory=list)  # boxes and spans in text order with their offsets

    @property
    def ok(self) -> bool:
        return not self.problems


# --- regular expressions ------------------------------------------------------------------------
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)"
_N = rf"\s*({_NUM})\s*"
# An opening bracket/brace followed by a comma-separated list of numbers; group 2 is the closer if it
# comes right after the list (else the notation is unclosed or has prose inside).
_NUM_LIST = rf"((?:{_NUM})(?:\s*,\s*(?:{_NUM})){{0,12}}(?:\s*,)?)\s*"
_BRACKET = re.compile(rf"\[\s*{_NUM_LIST}(\])?", re.IGNORECASE)
_BRACE = re.compile(rf"\{{\s*{_NUM_LIST}(\}})?", re.IGNORECASE)
_BBOX_JSON = re.compile(r"\{[^{}]{0,400}?\"bbox_2d\"[^{}]{0,400}?\}", re.IGNORECASE)
_QWEN_BOX = re.compile(
    r"(?:<ref>(?P<ref1>[^<]{0,200})</ref>|<\|object_ref_start\|>(?P<ref2>[^<]{0,200})<\|object_ref_end\|>)?\s*"
    rf"(?:<box>|<\|box_start\|>)\s*\({_N},{_N}\)\s*,\s*\({_N},{_N}\)\s*(?:</box>|<\|box_end\|>)",
    re.IGNORECASE,
)
_CLOCK = r"(?:\d+:)?\d{1,2}:\d{2}(?:\.\d+)?"
_SEC_UNIT = r"(?:s|secs?|seconds?)\b"
_SECONDS_SPAN = re.compile(
    rf"(?:\b(?:from|between)\s+)?(?P<a>{_CLOCK}|\d+(?:\.\d+)?)\s*(?P<ua>{_SEC_UNIT})?\s*"
    rf"(?:-|–|—|\bto\b|\band\b|\buntil\b)\s*(?P<b>{_CLOCK}|\d+(?:\.\d+)?)\s*(?P<ub>{_SEC_UNIT})?",
    re.IGNORECASE,
)
_PHRASE_BREAK = re.compile(r"[.;:!?\n,()\"]")
_LEADING_FILLER = re.compile(
    r"^(?:(?:and|or|with|while|but|then|also|here|is|are|was|were|there|the answer|answer|located|at|in|what|where|"
    r"which|who|how|does|do|did|can|could|please|find|locate|show|me|give|tell|detect|point to)\b\s*)+",
    re.IGNORECASE,
)
_TRAILING_FILLER = re.compile(
    r"(?:\s+\b(?:is|are|was|at|in|from|during|between|occurs|happens|located|around|is at|appears)\b)+\s*$",
    re.IGNORECASE,
)


def _to_float(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return math.nan


def _clock_seconds(s: str) -> float:
    if ":" not in s:
        return float(s)
    total = 0.0
    for part in s.split(":"):
        total = total * 60 + float(part)
    return total


@dataclass
class _Item:
    start: int  # character offsets of the notation in the text
    end: int
    kind: Literal["box", "span"]
    value: tuple[float, ...]  # already normalised
    phrase: str | None = None  # explicit label, if the format carries one


class _Parser:
    def __init__(self, text, image_size, duration, box_frame, span_unit, max_items, padded_square):
        self.text = text
        self.image_size = image_size
        self.duration = duration
        self.box_frame = box_frame
        self.span_unit = span_unit
        self.max_items = max_items
        self.padded_square = padded_square
        self.items: list[_Item] = []
        self.problems: list[str] = []
        self.taken = bytearray(len(text))  # 1 where a notation was consumed

    def _free(self, a: int, b: int) -> bool:
        return not any(self.taken[a:b])

    def _take(self, a: int, b: int) -> None:
        self.taken[a:b] = b"\x01" * (b - a)

    def problem(self, pos: int, msg: str) -> None:
        if len(self.problems) < 100:
            self.problems.append(f"at char {pos}: {msg}")

    # --- boxes ---
    def _normalise_box(self, pos: int, vals: Sequence[float], frame: BoxFrame) -> tuple[float, ...] | None:
        if not all(math.isfinite(v) for v in vals):
            self.problem(pos, "box has a non-finite coordinate")
            return None
        if frame == "auto":
            if max(vals) <= 1.0 + 1e-6:
                frame = "norm1"
            elif self.image_size is not None:
                frame = "pixel"
            elif max(vals) <= 1000 and all(float(v).is_integer() for v in vals):
                frame = "norm1000"  # Qwen-VL / Ferret style integer grid
            else:
                self.problem(pos, "box coordinate outside 0..1 (pixel boxes need the image size)")
                return None
        if frame == "norm1000":
            vals = [v / 1000 for v in vals]
        elif frame == "pixel":
            if self.image_size is None:
                self.problem(pos, "pixel box needs the image size")
                return None
            w, h = self.image_size
            vals = [vals[0] / w, vals[1] / h, vals[2] / w, vals[3] / h]
        why = box_problem(*vals)
        if why:
            self.problem(pos, why)
            return None
        if self.padded_square and self.image_size is not None:
            b = Box.from_padded_square(vals, *self.image_size)
            return b.xyxy
        return tuple(min(1.0, max(0.0, v)) for v in vals)

    def parse_bbox_json(self) -> None:
        for m in _BBOX_JSON.finditer(self.text):
            chunk = m.group(0)
            label = None
            try:
                obj = json.loads(chunk)
                vals = [float(v) for v in obj["bbox_2d"]]
                label = obj.get("label")
            except (ValueError, KeyError, TypeError):
                nums = re.search(rf'"bbox_2d"\s*:\s*\[{_N},{_N},{_N},{_N}\]', chunk, re.IGNORECASE)
                if not nums:
                    self.problem(m.start(), "malformed bbox_2d object")
                    self._take(m.start(), m.end())
                    continue
                vals = [_to_float(g) for g in nums.groups()]
                lm = re.search(r'"label"\s*:\s*"([^"]*)"', chunk)
                label = lm.group(1) if lm else None
            self._take(m.start(), m.end())
            if len(vals) != 4:
                self.problem(m.start(), f"bbox_2d has {len(vals)} numbers, not 4")
                continue
            # Qwen2.5-VL writes pixels of its input, Qwen3-VL 0..1000; the caller says which via box_frame.
            frame = self.box_frame
            if frame == "auto" and max(vals) > 1:
                frame = "pixel" if self.image_size is not None else "norm1000"
            norm = self._normalise_box(m.start(), vals, frame)
            if norm is not None:
                self.items.append(_Item(m.start(), m.end(), "box", norm, str(label) if label is not None else None))

    def parse_qwen_boxes(self) -> None:
        for m in _QWEN_BOX.finditer(self.text):
            if not self._free(m.start(), m.end()):
                continue
            self._take(m.start(), m.end())
            vals = [_to_float(m.group(i)) for i in range(3, 7)]
            frame = "norm1000" if self.box_frame == "auto" else self.box_frame
            norm = self._normalise_box(m.start(), vals, frame)
            ref = m.group("ref1") or m.group("ref2")
            if norm is not None:
                self.items.append(_Item(m.start(), m.end(), "box", norm, ref.strip() if ref else None))

    def parse_brackets(self) -> None:
        for m in _BRACKET.finditer(self.text):
            if not self._free(m.start(), m.end()):
                continue
            parts = [p.strip() for p in m.group(1).split(",") if p.strip()]
            if len(parts) < 2:
                continue  # `[1]` is a citation, not a box
            self._take(m.start(), m.end())
            if not m.group(2):
                self.problem(m.start(), "unclosed box bracket")
                continue
            if len(parts) != 4:
                self.problem(m.start(), f"box needs 4 numbers, got {len(parts)}")
                continue
            norm = self._normalise_box(m.start(), [_to_float(p) for p in parts], self.box_frame)
            if norm is not None:
                self.items.append(_Item(m.start(), m.end(), "box", norm))

    # --- spans ---
    def _add_span(self, pos: int, end: int, a: float, b: float, unit: SpanUnit) -> None:
        if not (math.isfinite(a) and math.isfinite(b)):
            self.problem(pos, "span has a non-finite time")
            return
        if unit == "auto":
            unit = "fraction" if max(a, b) <= 1.0 + 1e-6 else "seconds"
        if unit == "seconds":
            if self.duration is None or not self.duration > 0:
                self.problem(pos, "span in seconds needs the duration")
                return
            if b < a:
                self.problem(pos, "span end before start")
                return
            a, b = min(a, self.duration) / self.duration, min(b, self.duration) / self.duration
        why = span_problem(a, b)
        if why:
            self.problem(pos, why)
            return
        self.items.append(_Item(pos, end, "span", (min(1.0, max(0.0, a)), min(1.0, max(0.0, b)))))

    def parse_braces(self) -> None:
        for m in _BRACE.finditer(self.text):
            if not self._free(m.start(), m.end()):
                continue
            parts = [p.strip() for p in m.group(1).split(",") if p.strip()]
            if len(parts) < 2:
                continue
            self._take(m.start(), m.end())
            if not m.group(2):
                self.problem(m.start(), "unclosed span brace")
                continue
            if len(parts) != 2:
                self.problem(m.start(), f"span needs 2 numbers, got {len(parts)}")
                continue
            self._add_span(m.start(), m.end(), _to_float(parts[0]), _to_float(parts[1]), self.span_unit)

    def parse_seconds(self) -> None:
        for m in _SECONDS_SPAN.finditer(self.text):
            a, b = m.group("a"), m.group("b")
            is_clock = ":" in a or ":" in b
            if not (is_clock or m.group("ua") or m.group("ub")):
                continue  # "1 to 2" with no unit is not a time span
            if not self._free(m.start(), m.end()):
                continue
            self._take(m.start(), m.end())
            self._add_span(m.start(), m.end(), _clock_seconds(a), _clock_seconds(b), "seconds")

    # --- assembly ---
    def run(self) -> ParseResult:
        self.parse_bbox_json()
        self.parse_qwen_boxes()
        self.parse_brackets()
        self.parse_braces()
        self.parse_seconds()
        self.items.sort(key=lambda i: i.start)
        if len(self.items) > self.max_items:
            self.problems.append(f"{len(self.items)} items found; kept the first {self.max_items}")
            self.items = self.items[: self.max_items]
        result = ParseResult(problems=self.problems)
        prev_end, prev_phrase, prev_kind = 0, "", None
        for it in self.items:
            gap = self.text[prev_end : it.start]
            if it.phrase is not None:
                phrase = it.phrase
            elif prev_kind == it.kind and not gap.strip():
                phrase = prev_phrase  # `[..][..]`: several items for one phrase
            else:
                phrase = _phrase_before(gap)
            if it.kind == "box":
                item: Box | Span = Box(*it.value, phrase=phrase)
                result.boxes.append(item)
            else:
                item = Span(*it.value, phrase=phrase)
                result.spans.append(item)
            result.located.append(Located(it.start, it.end, item))
            prev_end, prev_phrase, prev_kind = it.end, phrase, it.kind
        result.plain_text = _strip_items(self.text, self.items)
        return result


def _phrase_before(gap: str) -> str:
    """The words a box/span follows: back to the previous sentence break or notation."""
    tail = _PHRASE_BREAK.split(gap)[-1]
    tail = _LEADING_FILLER.sub("", tail.strip())
    tail = _TRAILING_FILLER.sub("", tail).strip(" '`*")
    words = tail.split()
    return " ".join(words[-12:])


def _strip_items(text: str, items: list[_Item]) -> str:
    out, pos = [], 0
    for it in items:
        out.append(text[pos : it.start])
        pos = it.end
    out.append(text[pos:])
    return re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", "".join(out))).strip()


def parse(
    text: str,
    image_size: tuple[int, int] | None = None,
    duration: float | None = None,
    box_frame: BoxFrame = "auto",
    span_unit: SpanUnit = "auto",
    max_items: int = DEFAULT_MAX_ITEMS,
    padded_square: bool = False,
) -> ParseResult:
    """Every box and span in `text`, normalised, each with the phrase it belongs to.

    image_size (width, height) lets pixel boxes be read; duration (seconds) lets spans written in
    seconds be read. box_frame forces how numbers > 1 are read ("pixel" or "norm1000");
    padded_square maps boxes given in the original's padded-square frame back to the image.
    Never raises: malformed notations are skipped and described in `problems`.
    """
    if not isinstance(text, str):
        return ParseResult(problems=[f"expected text, got {type(text).__name__}"])
    return _Parser(text, image_size, duration, box_frame, span_unit, max(0, max_items), padded_square).run()
