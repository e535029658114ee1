"""Run a system over a benchmark, score it with the benchmarks' metrics, and beside it trivial baselines.

Predictions are appended to `predictions.jsonl` one line per sample as they are made, so a run that
dies (or an endpoint that fails) is resumed where it stopped and nothing already paid for is lost.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from omniground.data.schema import Sample
from omniground.eval.metrics import (
    event_f1,
    exact_match,
    grounded_caption_recall,
    rec_metrics,
    share_intervals,
    temporal_metrics,
    yes_no,
    yes_no_accuracy,
)
from omniground.eval.predictors import Predictor, reference_answer
from omniground.grounding import Box, Span, box_iou, parse, span_iou

BOX_TASKS = {"rec", "sound_localization"}
SPAN_TASKS = {"video_grounding", "audio_grounding"}
YES_NO_TASKS = {"negative"}


@dataclass
class Prediction:
    """One system answer, parsed: boxes as normalised xyxy, spans as fractions of the duration."""

    id: str
    text: str
    boxes: list[list[float]] = field(default_factory=list)
    spans: list[list[float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def box_values(self) -> list[Box]:
        return [Box(*b) for b in self.boxes]

    def span_values(self) -> list[Span]:
        return [Span(*s) for s in self.spans]


def parse_prediction(sample: Sample, text: str, box_frame: str = "auto", padded_square: bool = False) -> Prediction:
    """Read an answer the way the grounding language reads any system's text, in the sample's frame.

    padded_square: the system writes boxes relative to the image padded to a centred square (the
    original GroundingGPT's raw output); they are mapped back to the image before scoring.
    """
    image = next((m for m in sample.media if m.type == "image"), None)
    timed = next((m for m in sample.media if m.type in ("video", "audio")), None)
    size = (image.width, image.height) if image and image.width and image.height else None
    duration = timed.duration if timed else None
    r = parse(text, image_size=size, duration=duration, box_frame=box_frame,  # type: ignore[arg-type]
              padded_square=padded_square)
    return Prediction(sample.id, text, [list(b.xyxy) for b in r.boxes], [[s.start, s.end] for s in r.spans],
                      r.problems)


def read_predictions(path: Path) -> dict[str, Prediction]:
    """Predictions already made; a line cut short by a crash is ignored (that sample is redone)."""
    done: dict[str, Prediction] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                p = Prediction(**json.loads(line))
            except (ValueError, TypeError):
                continue
            done[p.id] = p
    return done


def predict_all(
    samples: Sequence[Sample],
    root: Path,
    predictor: Predictor,
    out: Path,
    batch_size: int = 8,
    show_progress: bool = True,
) -> dict[str, Prediction]:
    """Predictions for every sample, resuming from `out` (a JSONL appended to as work is done)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    done = read_predictions(out)
    todo = [s for s in samples if s.id not in done]
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with out.open("a", encoding="utf-8") as f, Progress(*columns, disable=not show_progress) as bar:
        task = bar.add_task(predictor.name, total=len(samples), completed=len(samples) - len(todo))
        for i in range(0, len(todo), batch_size):
            batch = todo[i : i + batch_size]
            for s, text in zip(batch, predictor.predict(batch, root), strict=True):
                p = parse_prediction(s, text, predictor.box_frame, getattr(predictor, "padded_square", False))
                f.write(json.dumps(asdict(p)) + "\n")
                f.flush()
                done[s.id] = p
            bar.advance(task, len(batch))
    return done


# --- scoring -----------------------------------------------------------------------------------


def group_of(sample: Sample) -> str:
    return f"{sample.task}/{sample.split}"


def _gt_box(s: Sample, pred: Prediction | None = None) -> Box:
    """The ground-truth box a prediction is scored against: with several (a phrase naming two objects, VGG-SS's
    several annotators) the one its top-1 box overlaps most, as phrase-grounding protocols do (ANY-box)."""
    boxes = [Box(*b.box) for b in s.boxes]
    if pred is None or not pred.boxes or len(boxes) == 1:
        return boxes[0]
    first = pred.box_values()[0]
    return max(boxes, key=lambda g: box_iou(first, g))


def _gt_span(s: Sample, pred: Prediction | None = None) -> Span:
    """The ground-truth span; with several windows (QVHighlights) the one the top-1 span overlaps most."""
    spans = [Span.from_seconds(lab.start, lab.end, s.media[lab.media].duration or 0.0) for lab in s.spans]
    if pred is None or not pred.spans or len(spans) == 1:
        return spans[0]
    first = pred.span_values()[0]
    return max(spans, key=lambda g: span_iou(first, g))


def score(samples: Sequence[Sample], preds: dict[str, Prediction]) -> dict[str, dict[str, float]]:
    """Metrics per benchmark group (task/split), each with the metrics its literature uses."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[group_of(s)].append(s)
    out: dict[str, dict[str, float]] = {}
    for name, ss in sorted(groups.items()):
        task = ss[0].task
        got = [preds.get(s.id) for s in ss]
        if task in BOX_TASKS:
            gts = [_gt_box(s, p) for s, p in zip(ss, got)]
            out[name] = rec_metrics([p.box_values() if p else [] for p in got], gts)
        elif task in SPAN_TASKS:
            gt_spans = [_gt_span(s, p) for s, p in zip(ss, got)]
            m = temporal_metrics([p.span_values() if p else [] for p in got], gt_spans)
            if task == "audio_grounding":
                secs = [[sp.to_seconds(s.media[0].duration) for sp in (p.span_values() if p else [])[:1]]
                        for p, s in zip(got, ss)]
                refs = [[(lab.start, lab.end) for lab in s.spans[:1]] for s in ss]
                m.update(event_f1(secs, refs))
            out[name] = m
        if task in BOX_TASKS | SPAN_TASKS:
            # Answers with no readable location (already scored IoU 0): tells a format failure from a miss.
            located = [bool(p and (p.boxes if task in BOX_TASKS else p.spans)) for p in got]
            out[name]["no_location"] = 1.0 - sum(located) / len(located)
        elif task == "grounded_caption":
            out[name] = {"recall@0.5": grounded_caption_recall(
                [p.box_values() if p else [] for p in got], [[Box(*b.box) for b in s.boxes] for s in ss]),
                "n": len(ss)}
        elif task in YES_NO_TASKS:
            # "Where is the purple clock?" with none in the picture: right = an answer that grounds nothing.
            declined = [bool(p and p.text.strip() and not p.boxes and not p.spans) for p in got]
            out[name] = {"rejection_acc": sum(declined) / len(declined), "n": len(ss)}
            asked = [(p.text if p else "", ref) for p, ref in zip(got, map(reference_answer, ss)) if yes_no(ref)]
            if asked:  # only questions whose reference says yes or no can be scored that way
                out[name]["yes_no_acc"] = yes_no_accuracy(*zip(*asked))
        elif task == "vqa":
            out[name] = {"exact_match": exact_match([p.text if p else "" for p in got],
                                                    [reference_answer(s) for s in ss]), "n": len(ss)}
        if name in out and (ci := share_intervals(out[name])):
            out[name]["ci95"] = ci
    return out


def per_sample_iou(sample: Sample, pred: Prediction | None) -> float | None:
    """Top-1 IoU for box/span tasks (0 when nothing was predicted), None for other tasks."""
    if sample.task in BOX_TASKS:
        return box_iou(pred.box_values()[0], _gt_box(sample, pred)) if pred and pred.boxes else 0.0
    if sample.task in SPAN_TASKS:
        return span_iou(pred.span_values()[0], _gt_span(sample, pred)) if pred and pred.spans else 0.0
    return None


# --- trivial baselines -------------------------------------------------------------------------


def _baseline(samples: Sequence[Sample], box: Callable[[random.Random], Box], span: Callable[[random.Random], Span],
              seed: int = 0) -> dict[str, Prediction]:
    rng = random.Random(seed)
    out = {}
    for s in samples:
        b, sp = box(rng), span(rng)
        out[s.id] = Prediction(s.id, "", boxes=[list(b.xyxy)] if s.task in BOX_TASKS else [],
                               spans=[[sp.start, sp.end]] if s.task in SPAN_TASKS else [])
    return out


def _random_box(rng: random.Random) -> Box:
    x1, x2 = sorted((rng.random(), rng.random()))
    y1, y2 = sorted((rng.random(), rng.random()))
    return Box(x1, y1, x2, y2)


def _random_span(rng: random.Random) -> Span:
    a, b = sorted((rng.random(), rng.random()))
    return Span(a, b)


BASELINES: dict[str, tuple[Callable[[random.Random], Box], Callable[[random.Random], Span]]] = {
    "centre box / middle half": (lambda r: Box(0.25, 0.25, 0.75, 0.75), lambda r: Span(0.25, 0.75)),
    "whole image / whole clip": (lambda r: Box(0.0, 0.0, 1.0, 1.0), lambda r: Span(0.0, 1.0)),
    "random": (_random_box, _random_span),
}


def baseline_scores(samples: Sequence[Sample]) -> dict[str, dict[str, dict[str, float]]]:
    """The same metrics for answers that ignore the media: the floor a model must clear."""
    located = [s for s in samples if s.task in BOX_TASKS | SPAN_TASKS]
    return {name: score(located, _baseline(located, b, sp)) for name, (b, sp) in BASELINES.items()}


def finite(d: dict) -> dict:
    """JSON-safe copy (NaN/inf -> None)."""
    return {k: (finite(v) if isinstance(v, dict) else (None if isinstance(v, float) and not math.isfinite(v) else v))
            for k, v in d.items()}


def ious_by_group(samples: Iterable[Sample], preds: dict[str, Prediction]) -> dict[str, list[tuple[float, Sample]]]:
    out: dict[str, list[tuple[float, Sample]]] = defaultdict(list)
    for s in samples:
        v = per_sample_iou(s, preds.get(s.id))
        if v is not None:
            out[group_of(s)].append((v, s))
    return out
