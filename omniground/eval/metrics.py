"""The benchmarks' own metrics, defined as the literature defines them.

- REC: Acc@t = share of expressions whose (top-1) predicted box has IoU >= t with the ground truth
  (t = 0.5 is the RefCOCO figure; Ref-L4 adds 0.75, 0.9 and mAcc, the mean over t = 0.5:0.05:0.95).
- Temporal grounding (Charades-STA, QVHighlights, ActivityNet): R@n,IoU=m = share of queries with at
  least one of the top-n predicted spans at IoU >= m; mIoU = mean IoU of the top-1 span.
- Audio events: event-based F1 with onset/offset collars as in DCASE's sed_eval (onset within
  200 ms, offset within max(200 ms, 20 % of the reference length)), one-to-one matching.
- Grounded captions: recall of the named ground-truth boxes; VQA-style: exact match after the usual
  normalisation; yes/no: accuracy of the first yes/no word.
- How sure a figure is: the metrics that are shares of the samples (Acc@t, R@n, rejection, exact match) get a
  95% Wilson interval, and two systems scored on the same samples are compared pair by pair (McNemar's exact
  test): at n=100 a share of 0.55 is 0.45-0.65, and a 2-point lift on 662 questions is often chance.

A missing prediction (the model gave no box/span) scores IoU 0: it is never dropped from the
denominator, which is how a parser failure would otherwise inflate a number.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from omniground.grounding import Box, Span, box_iou, span_iou

REC_THRESHOLDS = (0.5, 0.75, 0.9)
REF_L4_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))
TEMPORAL_THRESHOLDS = (0.3, 0.5, 0.7)


def top1_ious(preds: Sequence[Sequence[Box | Span]], gts: Sequence[Box | Span]) -> np.ndarray:
    """IoU of each sample's first prediction with its ground truth; 0 where nothing was predicted."""
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground truths")
    out = np.zeros(len(gts))
    for i, (p, g) in enumerate(zip(preds, gts)):
        if p:
            out[i] = box_iou(p[0], g) if isinstance(g, Box) else span_iou(p[0], g)
    return out


# An IoU that is exactly the threshold in pixels can come out a few ulps below it once corners are
# normalised (0.49999999999999994 for a 10x10 half of a 10x20 box on a 640x480 image); such ties count,
# as they do in reference code that works in pixels. 1e-12 is far below any real difference in overlap.
IOU_TIE = 1e-12


def right_at(ious, threshold: float) -> np.ndarray:
    """Which IoUs are at or above the threshold (IoU exactly at the threshold counts, as in the papers)."""
    return np.asarray(ious) >= threshold - IOU_TIE


def accuracy_at(ious: np.ndarray, threshold: float) -> float:
    """Share of IoUs at or above the threshold (`right_at`)."""
    return float(np.mean(right_at(ious, threshold))) if len(ious) else 0.0


def rec_metrics(preds: Sequence[Sequence[Box]], gts: Sequence[Box]) -> dict[str, float]:
    """Acc@0.5 / 0.75 / 0.9, mAcc (Ref-L4) and mean IoU for referring expression comprehension."""
    ious = top1_ious(preds, gts)
    out = {f"acc@{t}": accuracy_at(ious, t) for t in REC_THRESHOLDS}
    out["macc"] = float(np.mean([accuracy_at(ious, t) for t in REF_L4_THRESHOLDS])) if len(ious) else 0.0
    out["miou"] = float(ious.mean()) if len(ious) else 0.0
    out["n"] = len(ious)
    return out


# Metrics that are the share of the samples a system got right, one yes/no per sample: a binomial interval
# describes them. (yes_no_acc counts only the samples asked yes/no, recall@0.5 boxes: not these.)
SHARE_OF_SAMPLES = re.compile(r"(acc|r\d+)@[\d.]+|rejection_acc|exact_match")


def is_share_of_samples(metric: str) -> bool:
    return SHARE_OF_SAMPLES.fullmatch(metric) is not None


def wilson_interval(share: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The interval a share of n samples pins the true rate to (Wilson score). Why Wilson: it stays inside
    [0, 1] and keeps its coverage at small n and shares near 0 or 1, where share +- 1.96 standard errors does not."""
    from scipy.stats import binomtest

    ci = binomtest(round(share * n), n).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def share_intervals(metrics: dict[str, float]) -> dict[str, list[float]]:
    """A group's metrics -> the 95% interval of each that is a share of its n samples."""
    n = int(metrics.get("n") or 0)
    return {k: list(wilson_interval(v, n)) for k, v in metrics.items() if n and is_share_of_samples(k)}


def paired_p_value(only_a: int, only_b: int) -> float:
    """Two systems on the same samples: `only_a` right for A alone, `only_b` for B alone -> the two-sided p-value
    of McNemar's exact test, the chance of a split this uneven were both equally good. Samples both got right
    or both wrong say nothing about which is better, and are left out."""
    from scipy.stats import binomtest

    return 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def temporal_metrics(
    preds: Sequence[Sequence[Span]], gts: Sequence[Span], ranks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """R@n at IoU 0.3/0.5/0.7 for each n in `ranks`, and mIoU of the top-1 span."""
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground truths")
    out: dict[str, float] = {}
    for n in ranks:
        best = np.array([max((span_iou(s, g) for s in p[:n]), default=0.0) for p, g in zip(preds, gts)])
        for m in TEMPORAL_THRESHOLDS:
            out[f"r{n}@{m}"] = accuracy_at(best, m)
    out["miou"] = float(top1_ious(preds, gts).mean()) if len(gts) else 0.0
    out["n"] = len(gts)
    return out


@dataclass(frozen=True)
class EventCounts:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def match_events(
    pred: Sequence[tuple[float, float]],
    ref: Sequence[tuple[float, float]],
    onset_collar: float = 0.2,
    offset_collar_pct: float = 0.2,
) -> EventCounts:
    """sed_eval-style event matching of (onset, offset) pairs in seconds, one-to-one.

    A prediction matches a reference when its onset is within `onset_collar` seconds and its offset
    within max(onset_collar, offset_collar_pct * reference length). Matching is maximum bipartite
    (augmenting paths), so the count does not depend on the order of events.
    """
    ok = [
        [
            abs(p[0] - r[0]) <= onset_collar + 1e-9
            and abs(p[1] - r[1]) <= max(onset_collar, offset_collar_pct * (r[1] - r[0])) + 1e-9
            for r in ref
        ]
        for p in pred
    ]
    match_of_ref: list[int | None] = [None] * len(ref)

    def augment(i: int, seen: set[int]) -> bool:
        for j, good in enumerate(ok[i]):
            if good and j not in seen:
                seen.add(j)
                if match_of_ref[j] is None or augment(match_of_ref[j], seen):  # type: ignore[arg-type]
                    match_of_ref[j] = i
                    return True
        return False

    tp = sum(augment(i, set()) for i in range(len(pred)))
    return EventCounts(tp=tp, fp=len(pred) - tp, fn=len(ref) - tp)


def event_f1(
    preds: Sequence[Sequence[tuple[float, float]]], refs: Sequence[Sequence[tuple[float, float]]], **collars
) -> dict[str, float]:
    """Micro-averaged event-based precision, recall and F1 over all clips (times in seconds)."""
    total = EventCounts(0, 0, 0)
    for p, r in zip(preds, refs, strict=True):
        c = match_events(p, r, **collars)
        total = EventCounts(total.tp + c.tp, total.fp + c.fp, total.fn + c.fn)
    return {"event_precision": total.precision, "event_recall": total.recall, "event_f1": total.f1}


def grounded_caption_recall(
    preds: Sequence[Sequence[Box]], gts: Sequence[Sequence[Box]], threshold: float = 0.5
) -> float:
    """Share of named ground-truth boxes covered by a distinct predicted box at IoU >= threshold."""
    hit = total = 0
    for pred, gt in zip(preds, gts, strict=True):
        free = list(pred)
        for g in gt:
            total += 1
            best = max(range(len(free)), key=lambda k: box_iou(free[k], g), default=None)
            if best is not None and box_iou(free[best], g) >= threshold - IOU_TIE:
                hit += 1
                free.pop(best)
    return hit / total if total else 0.0


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """VQA/SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(preds: Sequence[str], gts: Sequence[str]) -> float:
    pairs = list(zip(preds, gts, strict=True))
    return sum(normalize_answer(p) == normalize_answer(g) for p, g in pairs) / len(pairs) if pairs else 0.0


def yes_no(text: str) -> str | None:
    """The first 'yes' or 'no' word of an answer, or None."""
    m = re.search(r"\b(yes|no)\b", text.lower())
    return m.group(1) if m else None


def yes_no_accuracy(preds: Sequence[str], gts: Sequence[str]) -> float:
    pairs = list(zip(preds, gts, strict=True))
    return sum(yes_no(p) == yes_no(g) and yes_no(g) is not None for p, g in pairs) / len(pairs) if pairs else 0.0
