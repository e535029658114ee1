"""One forward pass for many requests: per-row limits, stop strings, cancellation and streamed text.

`run_batch(og, rows)` answers a list of `Row`s with one `OmniGround.chat_batch` call. Hugging Face
`generate` only knows batch-wide limits and its text streamers refuse batches, so one `RowTracker`
(a streamer and a stopping criterion at once) keeps each row's own tokens, stops a row at its own
`max_tokens` / `stop` strings / cancellation, and hands each row the text it may show so far. An image
answer that declines in words is then checked by the region pointer (`OmniGround.overrule_declines`); a
streamed one holds back its first words while they may still open a decline.

Shared by the HTTP server (rows from concurrent requests) and the terminal chat (a batch of one).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from omniground.data.instruct import might_decline
from omniground.grounding import parse
from omniground.model.processing_omniground import RequestMeta
from omniground.model.tokenizer import BOX_TOKEN, SPAN_TOKEN


@dataclass(frozen=True)
class Sampling:
    """Settings that must be equal across a forward pass (rows differ in everything else)."""

    temperature: float = 0.0  # 0 -> greedy
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class Row:
    """One answer to produce: a conversation (str contents with <image>/<video>/<audio>) and its decoded media."""

    messages: list[dict]
    media: list[Any]  # decoded media (PIL image, VideoFrames, Audio), in placeholder order
    meta: RequestMeta  # first image size, first clip duration: maps answers back to the original media
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    sampling: Sampling = Sampling()
    on_text: Callable[[str], None] | None = None  # receives each new piece of visible text (streaming)
    cancelled: threading.Event = field(default_factory=threading.Event)
    answer_prefix: str | None = None  # the answer's given start (not streamed: for whole answers)


@dataclass
class Answer:
    """A finished row: user-facing text (boxes normalised to the original image) and its grounding."""

    text: str
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    boxes: list = field(default_factory=list)  # omniground.grounding.Box, normalised
    boxes_pixels: list = field(default_factory=list)  # (x1, y1, x2, y2) pixels of the original image
    spans: list = field(default_factory=list)  # omniground.grounding.Span, fractions of the duration
    spans_seconds: list = field(default_factory=list)  # (start, end) seconds
    image_size: tuple[int, int] | None = None
    duration: float | None = None
    problems: list[str] = field(default_factory=list)


def visible_text(processor, raw: str, meta: RequestMeta, final: bool, stops: tuple[str, ...] = ()) -> str:
    """Decoded model text -> the prefix a user may already see.

    Held back until complete: a location-token group, a `[..]`/`{..}` notation (it may still be
    reframed from the padded square to the original image), a half-decoded UTF-8 character, and any
    tail that could still become a stop string. With `final`, only stop strings cut the text.
    """
    text = raw
    if not final:
        text = text.rstrip("\ufffd")
        marker = max(text.rfind(BOX_TOKEN), text.rfind(SPAN_TOKEN))
        if marker >= 0:  # an unfinished location group: a box needs 4 <loc_k>, a span 2
            need = 4 if text.startswith(BOX_TOKEN, marker) else 2
            if text.count("<loc_", marker) < need:
                text = text[:marker]
    text = processor.render_location_tokens(text)
    text = processor.post_process_grounding(text, meta).text if final else _reframe_closed(processor, text, meta)
    text = text.lstrip()
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if cut >= 0:
        return text[:cut]
    if final:
        return text.rstrip()
    keep = max((len(s) - 1 for s in stops), default=0)
    return text[: len(text) - keep] if keep else text


_OPEN_NOTATION = re.compile(r"[\[{][^\[\]{}\n]*$")


def _reframe_closed(processor, text: str, meta: RequestMeta) -> str:
    """Drop an unclosed `[..`/`{..` tail, then show closed notations as the final answer will."""
    open_tail = _OPEN_NOTATION.search(text)
    if open_tail:
        text = text[: open_tail.start()]
    return processor.post_process_grounding(text, meta).text


class RowTracker(BaseStreamer, StoppingCriteria):
    """Follows every row of one `generate` call: its tokens, when it must stop, and its streamed text."""

    def __init__(self, processor, rows: list[Row], eos_ids: set[int], held: list[bool] | None = None):
        self.processor, self.rows, self.eos_ids = processor, rows, eos_ids
        n = len(rows)
        # rows whose decline may be checked: streamed text that may still become one is held back
        self.held = held or [False] * n
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.prompt_tokens = [0] * n
        self.finish = [None] * n  # per row: None while running, then "stop" | "length" | "cancelled"
        self.shown = [""] * n  # text already handed to on_text
        self._prompt_seen = False

    # ---- BaseStreamer: generate calls put(prompt ids (B, L)), then put(next tokens (B,)) each step ----
    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            pad = self.processor.tokenizer.pad_token_id
            self.prompt_tokens = [int((r != pad).sum()) for r in value.reshape(len(self.rows), -1)]
            return
        for i, token in enumerate(value.reshape(-1).tolist()):
            if self.finish[i] is not None:
                continue
            if token in self.eos_ids:
                self.finish[i] = "stop"
                continue
            self.ids[i].append(token)
            row = self.rows[i]
            if row.on_text is None and not row.stop:
                continue
            raw = self.processor.tokenizer.decode(self.ids[i], skip_special_tokens=True)
            if row.stop and any(s in raw for s in row.stop):
                self.finish[i] = "stop"
            if row.on_text is not None:
                text = visible_text(self.processor, raw, row.meta, final=False, stops=row.stop)
                if not (self.held[i] and might_decline(text)):
                    self.emit(i, text)

    def end(self) -> None:
        pass

    def emit(self, i: int, text: str) -> None:
        """Hand row i the part of `text` it has not seen (only ever appends)."""
        shown = self.shown[i]
        if len(text) > len(shown) and text.startswith(shown):
            self.rows[i].on_text(text[len(shown) :])
            self.shown[i] = text

    # ---- StoppingCriteria: called after put() each step; True ends that row ----
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.BoolTensor:
        for i, row in enumerate(self.rows):
            if self.finish[i] is None:
                if row.cancelled.is_set():
                    self.finish[i] = "cancelled"
                elif len(self.ids[i]) >= row.max_tokens:
                    self.finish[i] = "length"
        return torch.tensor([f is not None for f in self.finish], dtype=torch.bool, device=input_ids.device)


def run_batch(og, rows: list[Row]) -> list[Answer]:
    """Answer `rows` (all with the same `Sampling`) in one forward pass; each row stops on its own."""
    sampling = rows[0].sampling
    if any(r.sampling != sampling for r in rows):
        raise ValueError("rows of one batch must share their sampling settings")
    gen = og.model.generation_config
    eos = {gen.pad_token_id, *_as_list(gen.eos_token_id)} - {None}
    checkable = [not r.answer_prefix and og.checks_declines(r.media) for r in rows]  # see `overrule_declines`
    tracker = RowTracker(og.processor, rows, eos, held=checkable)
    results = og.chat_batch(
        [r.messages for r in rows],
        [r.media for r in rows],
        max_new_tokens=max(r.max_tokens for r in rows),
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        streamer=tracker,
        stopping_criteria=StoppingCriteriaList([tracker]),  # per-row limits, stop strings, cancellation
        answer_prefixes=[r.answer_prefix for r in rows],
        check_declines=False,
    )
    # A decline in words is checked by the region pointer (`overrule_declines`) where nothing of it was shown
    # (a streamed row holds back what may still become a decline), it was not cancelled, and the answer's
    # start was not given.
    unshown = [i for i, ok in enumerate(checkable) if ok and not tracker.shown[i] and tracker.finish[i] != "cancelled"]
    asked = ([r.messages for r in rows], [r.media for r in rows])
    again = dict(max_new_tokens=max(r.max_tokens for r in rows), temperature=sampling.temperature,
                 top_p=sampling.top_p)
    checked = og.overrule_declines(*asked, results, unshown, **again)
    # A grounding answer (given its start; not streamed) that wrote no box or span is asked for it.
    starts = [None if tracker.finish[i] == "cancelled" else r.answer_prefix for i, r in enumerate(rows)]
    checked = og.location_after_start(*asked, checked, starts, **again)
    answers = []
    for i, (row, result) in enumerate(zip(rows, checked)):
        text = result.text
        for s in row.stop:  # OpenAI semantics: the stop string itself is not part of the answer
            at = text.find(s)
            if at >= 0:
                text = text[:at].rstrip()
        # Boxes/spans come in text order: a cut answer keeps the ones still written in it.
        kept = parse(text, box_frame="norm1")
        nb, ns = len(kept.boxes), len(kept.spans)
        finish = tracker.finish[i] or ("length" if len(tracker.ids[i]) >= row.max_tokens else "stop")
        tokens = len(tracker.ids[i])
        if result.overruled:  # the re-asked answer replaced the LM's first
            finish, tokens = result.finish_reason, result.num_tokens
        answer = Answer(
            text=text, finish_reason=finish, prompt_tokens=tracker.prompt_tokens[i],
            completion_tokens=tokens,
            boxes=result.boxes[:nb], boxes_pixels=result.boxes_pixels[:nb],
            spans=result.spans[:ns], spans_seconds=result.spans_seconds[:ns],
            image_size=row.meta.image_size, duration=row.meta.duration, problems=list(result.problems),
        )
        if row.on_text is not None:
            tracker.emit(i, text)
        answers.append(answer)
    return answers


def _as_list(x) -> list:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]


def grounding_json(a: Answer) -> dict:
    """The structured result every answer carries, so callers never parse text.

    Pixels/seconds are null when the conversation holds no image/clip to measure them against.
    """
    pixels = a.boxes_pixels if len(a.boxes_pixels) == len(a.boxes) else [None] * len(a.boxes)
    seconds = a.spans_seconds if len(a.spans_seconds) == len(a.spans) else [None] * len(a.spans)
    return {
        "boxes": [
            {"phrase": b.phrase, "score": _round(b.score),
             "bbox": [round(v, 2) for v in px] if px is not None else None,
             "bbox_normalized": [round(v, 4) for v in b.xyxy]}
            for b, px in zip(a.boxes, pixels)
        ],
        "spans": [
            {"phrase": s.phrase, "score": _round(s.score),
             "start": round(sec[0], 3) if sec is not None else None,
             "end": round(sec[1], 3) if sec is not None else None,
             "span_normalized": [round(s.start, 4), round(s.end, 4)]}
            for s, sec in zip(a.spans, seconds)
        ],
        "image_size": list(a.image_size) if a.image_size else None,
        "duration": round(a.duration, 3) if a.duration else None,
        "problems": a.problems,
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)
