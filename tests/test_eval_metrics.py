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


# --- thresholds hit exactly, and just missed ------------------------------------------------------
# Every IoU below is an exact binary fraction or the very float of the threshold literal, so a `>` in
# place of `>=` (or a threshold off by one step) changes the result.


def test_rec_thresholds_each_hit_exactly():
    gt = Box(0.0, 0.0, 1.0, 1.0)
    at = {t: Box(0.0, 0.0, 1.0, t) for t in (0.5, 0.75, 0.9)}  # IoU == t exactly
    m = rec_metrics([[at[0.5]], [at[0.75]], [at[0.9]]], [gt, gt, gt])
    assert (m["acc@0.5"], m["acc@0.75"], m["acc@0.9"]) == pytest.approx((3 / 3, 2 / 3, 1 / 3))
    just_below = rec_metrics([[Box(0.0, 0.0, 1.0, 0.5 - 1e-6)]], [gt])
    assert just_below["acc@0.5"] == 0.0  # the float tolerance is far smaller than any real miss


def test_temporal_thresholds_each_hit_exactly():
    gt = Span(0.0, 1.0)
    m = temporal_metrics([[Span(0.0, 0.3)], [Span(0.0, 0.5)], [Span(0.0, 0.7)]], [gt, gt, gt])
    assert (m["r1@0.3"], m["r1@0.5"], m["r1@0.7"]) == pytest.approx((3 / 3, 2 / 3, 1 / 3))
    assert temporal_metrics([[Span(0.0, 0.7 - 1e-6)]], [gt])["r1@0.7"] == 0.0


def test_event_collars_are_inclusive():
    ref = [(1.0, 5.0)]  # length 4 s: offset collar max(0.25, 20% of 4) = 0.8 s
    assert match_events([(1.25, 5.0)], ref, onset_collar=0.25).tp == 1
    assert match_events([(1.2501, 5.0)], ref, onset_collar=0.25).tp == 0
    assert match_events([(1.0, 5.75)], ref, onset_collar=0.25, offset_collar_pct=0.1875).tp == 1  # 0.75 s exactly
    assert match_events([(1.0, 5.7501)], ref, onset_collar=0.25, offset_collar_pct=0.1875).tp == 0


def test_grounded_caption_threshold_is_inclusive():
    gt = Box(0.0, 0.0, 1.0, 1.0)
    assert grounded_caption_recall([[Box(0.0, 0.0, 1.0, 0.5)]], [[gt]]) == 1.0
    assert grounded_caption_recall([[Box(0.0, 0.0, 1.0, 0.4375)]], [[gt]]) == 0.0


# --- normalisation: the same answer in every frame a system may write gives the same score ----------


def _rec_sample(w, h):
    from omniground.data.schema import Sample

    return Sample(id="s", media=[{"type": "image", "path": "x.png", "width": w, "height": h}],
                  conversation=[{"role": "user", "content": "<image>\nthe cat?"},
                                {"role": "assistant", "content": "the cat[0.100,0.200,0.500,0.600]"}],
                  boxes=[{"phrase": "the cat", "box": [0.1, 0.2, 0.5, 0.6]}], task="rec", stage=2, source="t",
                  license="CC0-1.0")


@pytest.mark.parametrize("text, frame", [
    ("the cat[0.100,0.200,0.500,0.600]", "auto"),  # ours, 0..1
    ('{"bbox_2d": [20, 20, 100, 60], "label": "cat"}', "auto"),  # Qwen2.5-VL pixels of a 200x100 image
    ("<ref>cat</ref><box>(100,200),(500,600)</box>", "auto"),  # Qwen-VL 0..1000
    ("the cat [100, 200, 500, 600]", "norm1000"),  # Ferret/Shikra-style integers, frame given
    ("the cat [20, 20, 100, 60]", "pixel"),
])
def test_box_frames_normalise_to_the_same_box(text, frame):
    from omniground.eval.runner import parse_prediction, score

    s = _rec_sample(200, 100)  # not square: a swapped width/height would move the box
    p = parse_prediction(s, text, frame)
    assert p.boxes[0] == pytest.approx([0.1, 0.2, 0.5, 0.6])
    assert score([s], {"s": p})["rec/train"]["acc@0.9"] == 1.0


def test_padded_square_answers_are_mapped_back_to_the_image():
    from omniground.eval.runner import parse_prediction

    s = _rec_sample(200, 100)  # padded to 200x200, the image 50 px down: y 0.2..0.6 -> 0.35..0.55 of the square
    p = parse_prediction(s, "the cat[0.100,0.350,0.500,0.550]", padded_square=True)
    assert p.boxes[0] == pytest.approx([0.1, 0.2, 0.5, 0.6])


@pytest.mark.parametrize("text", ["{0.25,0.50}", "from 5.0s to 10.0s", "between 00:05 and 00:10", "5 - 10 seconds"])
def test_span_units_normalise_to_the_same_span(text):
    from omniground.data.schema import Sample
    from omniground.eval.runner import parse_prediction, score

    s = Sample(id="v", media=[{"type": "video", "path": "v.mp4", "duration": 20.0}],
               conversation=[{"role": "user", "content": "<video>\nwhen?"},
                             {"role": "assistant", "content": "then {0.25,0.50}"}],
               spans=[{"phrase": "then", "start": 5.0, "end": 10.0}], task="video_grounding", stage=2, source="t",
               license="CC0-1.0")
    p = parse_prediction(s, text)
    assert p.spans[0] == pytest.approx([0.25, 0.5])
    assert score([s], {"v": p})["video_grounding/train"]["r1@0.7"] == 1.0


def test_an_exact_pixel_tie_survives_normalisation():
    # In pixels the top half of a 10x20 box has IoU 0.5 exactly, as reference code computing in pixels finds;
    # normalised by 640x480 the floats give 0.49999999999999994. The tie must still count.
    gt = Box.from_pixels((1, 1, 11, 21), 640, 480)
    half = Box.from_pixels((1, 1, 11, 11), 640, 480)
    assert rec_metrics([[half]], [gt])["acc@0.5"] == 1.0


def test_answers_without_a_location_are_counted_apart():
    from omniground.eval.runner import parse_prediction, score

    s = _rec_sample(200, 100)
    t = _rec_sample(200, 100).model_copy(update={"id": "t"})
    preds = {"s": parse_prediction(s, "I cannot tell."), "t": parse_prediction(t, "[0.1,0.2,0.5,0.6]")}
    m = score([s, t], preds)["rec/train"]
    assert m["no_location"] == 0.5 and m["acc@0.5"] == 0.5  # the unanswered one is a miss, not dropped


def test_shares_of_samples_get_wilson_intervals_and_other_metrics_none():
    from omniground.eval.metrics import share_intervals, wilson_interval

    lo, hi = wilson_interval(0.5, 100)  # the textbook case: 50 of 100, 0.404-0.596
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(0.0, 10)[0] == 0.0 and wilson_interval(1.0, 10)[1] == 1.0  # never outside [0, 1]
    assert wilson_interval(0.0, 10)[1] == pytest.approx(0.2775, abs=1e-4)  # 0 of 10 does not pin the rate to 0
    narrow, wide = wilson_interval(0.8, 1000), wilson_interval(0.8, 100)
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 2  # more samples, a tighter interval
    got = share_intervals({"acc@0.5": 0.5, "acc@0.75": 0.25, "macc": 0.3, "miou": 0.4, "r1@0.3": 0.9, "r5@0.5": 1.0,
                           "rejection_acc": 0.2, "exact_match": 0.5, "yes_no_acc": 0.5, "recall@0.5": 0.4,
                           "no_location": 0.0, "n": 100})
    # yes_no_acc counts only the samples asked yes/no and recall@0.5 boxes, not the group's n samples
    assert set(got) == {"acc@0.5", "acc@0.75", "r1@0.3", "r5@0.5", "rejection_acc", "exact_match"}
    assert got["acc@0.5"] == pytest.approx([lo, hi])
    assert share_intervals({"acc@0.5": 0.5, "n": 0}) == {}


def test_paired_p_value_is_mcnemars_exact_test():
    from omniground.eval.metrics import paired_p_value

    assert paired_p_value(0, 6) == pytest.approx(2 / 2**6)  # all six discordant samples one way
    assert paired_p_value(6, 0) == paired_p_value(0, 6)
    assert paired_p_value(3, 3) == 1.0 and paired_p_value(0, 0) == 1.0
    assert paired_p_value(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 2**10)  # P(X <= 2), X ~ Bin(10, 1/2), twice
