"""Metrics against hand-computed cases, including the threshold and normalisation edge cases."""

import pytest

from omniground.eval.metrics import (
    event_f1,
    exact_match,
    grounded_caption_recall,
    match_events,
    normalize_answer,
    rec_metrics,
    temporal_metrics,
    yes_no_accuracy,
)
from omniground.grounding import Box, Span


def test_rec_accuracy_counts_iou_exactly_at_threshold():
    gt = Box(0.0, 0.0, 0.5, 0.5)
    half = Box(0.0, 0.0, 0.5, 0.25)  # IoU exactly 0.5
    below = Box(0.0, 0.0, 0.5, 0.249)  # IoU 0.498
    m = rec_metrics([[half], [below], [gt], []], [gt, gt, gt, gt])
    assert m["acc@0.5"] == pytest.approx(2 / 4)  # half (== 0.5) and gt count; below and missing do not
    assert m["acc@0.75"] == pytest.approx(1 / 4)
    assert m["acc@0.9"] == pytest.approx(1 / 4)
    assert m["miou"] == pytest.approx((0.5 + 0.498 + 1 + 0) / 4)
    assert m["n"] == 4


def test_rec_uses_only_the_first_box_and_macc_is_the_mean_over_ten_thresholds():
    gt = Box(0.0, 0.0, 1.0, 1.0)
    m = rec_metrics([[Box(0, 0, 0.1, 0.1), gt]], [gt])  # the right box second does not count
    assert m["acc@0.5"] == 0.0
    # IoU 0.72: passes 0.5, 0.55, ..., 0.7 -> 5 of the 10 thresholds 0.5:0.05:0.95
    m = rec_metrics([[Box(0, 0, 1.0, 0.72)]], [gt])
    assert m["macc"] == pytest.approx(0.5)


def test_temporal_recall_at_thresholds_and_ranks():
    gt = Span(0.2, 0.6)
    p_05 = Span(0.2, 0.4)  # IoU 0.5 exactly
    p_03 = Span(0.4, 0.7)  # inter 0.2, union 0.5 -> 0.4
    far = Span(0.8, 0.9)
    m = temporal_metrics([[p_05], [p_03], [far, gt], []], [gt, gt, gt, gt])
    assert m["r1@0.3"] == pytest.approx(2 / 4)
    assert m["r1@0.5"] == pytest.approx(1 / 4)
    assert m["r1@0.7"] == 0.0
    assert m["r5@0.7"] == pytest.approx(1 / 4)  # the right span at rank 2 counts for R@5 only
    assert m["miou"] == pytest.approx((0.5 + 0.4 + 0 + 0) / 4)


def test_span_normalisation_does_not_change_iou():
    # the same spans in seconds (duration 20 s) and as fractions give the same metric
    gt = Span.from_seconds(4, 12, 20)
    pred = Span.from_seconds(6, 12, 20)
    assert temporal_metrics([[pred]], [gt])["miou"] == pytest.approx(6 / 8)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        rec_metrics([[]], [])


def test_event_matching_collars():
    ref = [(1.0, 3.0)]
    assert match_events([(1.2, 3.0)], ref).tp == 1  # onset exactly at the 200 ms collar
    assert match_events([(1.21, 3.0)], ref).tp == 0
    assert match_events([(1.0, 3.4)], ref).tp == 1  # offset collar = max(0.2, 20% of 2 s) = 0.4 s
    assert match_events([(1.0, 3.41)], ref).tp == 0
    c = match_events([(1.0, 3.0), (1.05, 3.0)], ref)  # two predictions for one event: one is a false positive
    assert (c.tp, c.fp, c.fn) == (1, 1, 0)


def test_event_matching_is_one_to_one_and_order_free():
    refs = [(0.0, 1.0), (0.3, 1.0)]
    # the first prediction fits both references, the second only ref 0: greedy in order would pair the
    # first with ref 0 and leave ref 1 unmatched
    preds = [(0.15, 1.0), (0.0, 1.0)]
    assert match_events(preds, refs).tp == 2
    assert match_events(preds[::-1], refs).tp == 2


def test_event_f1_micro_average():
    m = event_f1([[(0, 1)], [(5, 6)]], [[(0, 1)], [(0, 1)]])
    assert m["event_precision"] == 0.5 and m["event_recall"] == 0.5 and m["event_f1"] == 0.5


def test_grounded_caption_recall_uses_each_prediction_once():
    g1, g2 = Box(0, 0, 0.5, 0.5), Box(0.5, 0.5, 1, 1)
    assert grounded_caption_recall([[g1, g2]], [[g1, g2]]) == 1.0
    assert grounded_caption_recall([[g1]], [[g1, Box(0, 0, 0.5, 0.5)]]) == 0.5


def test_answer_normalisation():
    assert normalize_answer("The  Red car!") == "red car"
    assert exact_match(["A red car.", "blue"], ["red car", "green"]) == 0.5
    assert yes_no_accuracy(["Yes, there is.", "No.", "maybe"], ["yes", "yes", "no"]) == pytest.approx(1 / 3)
