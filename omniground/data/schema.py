"""One record per training/evaluation sample, written as JSONL, and the one validator for it.

Ground truth is stored in the peers' conventions (boxes normalised 0..1 of the original image,
spans in seconds with the media's duration, as QVHighlights' `relevant_windows`); the conversation
holds model text in the grounding language. The validator checks that every box and span written
in an assistant turn is one of the labelled ones, so a converter or a teacher LLM cannot slip a
wrong location into training text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from omniground.files import atomic_output
from omniground.grounding import Box, Span, box_iou, parse, span_iou

MediaType = Literal["image", "video", "audio"]
Task = Literal[
    "caption",  # stage 1: describe the whole media
    "rec",  # referring expression -> box
    "reg",  # box given in the question -> description
    "grounded_caption",  # caption with every object's box
    "negative",  # "is there a ...?" for an absent thing
    "video_grounding",  # query -> time span in a video
    "audio_grounding",  # query -> time span in an audio clip
    "sound_localization",  # image + audio -> box of the sounding thing
    "vqa",
    "dialogue",  # multi-turn instruction data
]
PLACEHOLDER = {"image": "<image>", "video": "<video>", "audio": "<audio>"}

# Text carries 3 decimals for boxes and 2 for span fractions: a written location matches a label
# when it is that label up to rounding.
BOX_MATCH_IOU = 0.95
SPAN_MATCH_IOU = 0.9
# A short span (4 s of a 126-s video) rounded to 2 decimals can fall under the IoU bar although it
# is the label written as precisely as the text allows: within half a last digit per end matches too.
BOX_ROUNDING = 0.5e-3 + 1e-9
SPAN_ROUNDING = 0.5e-2 + 1e-9


def box_matches(written: Box, label: Box) -> bool:
    """`written` is `label` up to the text's rounding (IoU or per-corner closeness)."""
    close = all(abs(a - b) <= BOX_ROUNDING for a, b in zip(written.xyxy, label.xyxy))
    return close or box_iou(written, label) >= BOX_MATCH_IOU


def span_matches(written: Span, label: Span) -> bool:
    close = abs(written.start - label.start) <= SPAN_ROUNDING and abs(written.end - label.end) <= SPAN_ROUNDING
    return close or span_iou(written, label) >= SPAN_MATCH_IOU


class Media(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: MediaType
    path: str  # relative to the JSONL file's folder, or absolute
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    duration: float | None = Field(default=None, gt=0)  # seconds, video and audio

    @model_validator(mode="after")
    def _needs_size(self) -> "Media":
        if self.type in ("video", "audio") and self.duration is None:
            raise ValueError(f"{self.type} media needs its duration")
        return self


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class BoxLabel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phrase: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 normalised 0..1 of the original image
    media: int = 0  # index into Sample.media

    @field_validator("box")
    @classmethod
    def _valid(cls, v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        Box(*v)  # raises ValueError with the reason
        return v


class SpanLabel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phrase: str
    start: float = Field(ge=0)  # seconds
    end: float = Field(ge=0)
    media: int = 0

    @model_validator(mode="after")
    def _ordered(self) -> "SpanLabel":
        if self.end < self.start:
            raise ValueError("span end before start")
        return self


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    media: list[Media] = Field(default_factory=list)
    conversation: list[Turn] = Field(min_length=2)
    boxes: list[BoxLabel] = Field(default_factory=list)
    spans: list[SpanLabel] = Field(default_factory=list)
    task: Task
    stage: Literal[1, 2, 3]
    source: str  # dataset of origin, e.g. "synth", "refcoco"
    license: str
    split: str = "train"
    meta: dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> "Sample":
        for label in [*self.boxes, *self.spans]:
            if not 0 <= label.media < len(self.media):
                raise ValueError(f"label '{label.phrase}' points at media {label.media}, sample has {len(self.media)}")
        for s in self.spans:
            d = self.media[s.media].duration
            if d is None or s.end > d + 1e-3:
                raise ValueError(f"span '{s.phrase}' ends at {s.end}s, after the media's {d}s")
        if not any(t.role == "assistant" for t in self.conversation):
            raise ValueError("conversation has no assistant turn")
        for m in self.media:
            if not any(PLACEHOLDER[m.type] in t.content for t in self.conversation if t.role == "user"):
                raise ValueError(f"no {PLACEHOLDER[m.type]} placeholder in a user turn")
        self._check_written_locations()
        return self

    def _check_written_locations(self) -> None:
        """Every box/span an assistant writes must be one of the labels (up to text rounding)."""
        first = self.media[0] if self.media else None
        size = (first.width, first.height) if first and first.width and first.height else None
        duration = first.duration if first else None
        label_boxes = [Box(*b.box) for b in self.boxes]
        label_spans = [Span.from_seconds(s.start, s.end, self.media[s.media].duration) for s in self.spans]
        for turn in self.conversation:
            if turn.role != "assistant":
                continue
            found = parse(turn.content, image_size=size, duration=duration)
            if found.problems:
                raise ValueError(f"assistant text has malformed grounding: {found.problems[0]}")
            for b in found.boxes:
                if not any(box_matches(b, lb) for lb in label_boxes):
                    raise ValueError(f"assistant writes box {b.xyxy} that is not a label")
            for s in found.spans:
                if not any(span_matches(s, ls) for ls in label_spans):
                    raise ValueError(f"assistant writes span {(s.start, s.end)} that is not a label")

    def media_path(self, index: int, root: str | os.PathLike) -> Path:
        """Absolute path of a media file, resolving relative paths against the JSONL's folder."""
        p = Path(self.media[index].path)
        return p if p.is_absolute() else Path(root) / p


class BadLine(BaseModel):
    line: int
    error: str


def read_jsonl(path: str | os.PathLike, bad: list[BadLine] | None = None) -> Iterator[Sample]:
    """Valid samples of a JSONL file; each bad line is appended to `bad` with its number and skipped."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield Sample.model_validate_json(line)
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(x) for x in err.get("loc", ()))
                msg = f"{where}: {err['msg']}" if where else err["msg"]
                if bad is not None:
                    bad.append(BadLine(line=n, error=msg))
            except ValueError as e:  # not JSON at all
                if bad is not None:
                    bad.append(BadLine(line=n, error=f"not valid JSON: {e}"))


def write_jsonl(path: str | os.PathLike, samples: Iterable[Sample]) -> int:
    """Write samples atomically (a temp file renamed into place): a failure leaves no half file."""
    n = 0
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s.model_dump(mode="json"), ensure_ascii=False) + "\n")
            n += 1
    return n
