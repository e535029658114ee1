"""The grounding language: formats, parsing of ours and other systems' text, frames, IoU."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omniground.grounding import (
    Box,
    Span,
    box_giou,
    box_iou,
    format_box,
    format_span,
    ground_phrase,
    parse,
    span_giou,
    span_iou,
)

# --- formatting ----------------------------------------------------------------------------------


def test_format_box_three_decimals_and_span_two_decimals():
    assert format_box(Box(0.1, 0.2, 0.3, 0.4)) == "[0.100,0.200,0.300,0.400]"
    assert format_box((0.12345, 0, 1, 0.9999)) == "[0.123,0.000,1.000,1.000]"
    assert format_span(Span(0.16, 0.36)) == "{0.16,0.36}"
    assert format_span((0.123, 0.987)) == "{0.12,0.99}"


def test_ground_phrase_writes_several_boxes_back_to_back():
    text = ground_phrase("two dogs", [Box(0, 0, 0.5, 0.5), Box(0.5, 0.5, 1, 1)])
    assert text == "two dogs[0.000,0.000,0.500,0.500][0.500,0.500,1.000,1.000]"


def test_box_rejects_invalid_corners():
    for bad in [(0.5, 0.1, 0.2, 0.3), (0, 0, 1.2, 1), (math.nan, 0, 1, 1), (-0.1, 0, 1, 1)]:
        with pytest.raises(ValueError):
            Box(*bad)
    with pytest.raises(ValueError):
        Span(0.6, 0.5)


# --- parsing our own format ----------------------------------------------------------------------


def test_parse_boxes_with_their_phrases():
    r = parse("There is a red car[0.100,0.200,0.300,0.400] and two dogs[0.5,0.5,0.6,0.6][0.7,0.7,0.8,0.9].")
    assert r.ok
    assert [b.phrase for b in r.boxes] == ["a red car", "two dogs", "two dogs"]
    assert r.boxes[0].xyxy == (0.1, 0.2, 0.3, 0.4)
    assert r.boxes[2].xyxy == (0.7, 0.7, 0.8, 0.9)
    assert r.plain_text == "There is a red car and two dogs."
    text = "There is a red car[0.100,0.200,0.300,0.400] and two dogs[0.5,0.5,0.6,0.6][0.7,0.7,0.8,0.9]."
    assert [text[loc.start:loc.end] for loc in parse(text).located] == [
        "[0.100,0.200,0.300,0.400]", "[0.5,0.5,0.6,0.6]", "[0.7,0.7,0.8,0.9]"]


def test_parse_spans_with_spacing_variants():
    r = parse("The baby stretches in {0.16, 0.36}. The dog turns {0.09,0.15}")
    assert [(s.start, s.end) for s in r.spans] == [(0.16, 0.36), (0.09, 0.15)]
    assert r.spans[0].phrase == "The baby stretches"
    assert r.spans[1].phrase == "The dog turns"


def test_parse_referring_box_in_question():
    r = parse("What is this girl[0.460, 0.000, 0.915, 0.995] doing in this image?")
    assert len(r.boxes) == 1 and r.boxes[0].phrase == "this girl"
    assert r.boxes[0].xyxy == (0.46, 0.0, 0.915, 0.995)


def test_prose_brackets_and_citations_are_not_boxes():
    r = parse("As shown [1] and [citation needed], see {note} or [a, b, c, d].")
    assert r.boxes == [] and r.spans == [] and r.problems == []


# --- malformed text never raises ----------------------------------------------------------------


def test_malformed_items_are_reported_and_valid_ones_kept():
    text = (
        "a car[0.1,0.2,0.3,0.4] then [0.5,0.1,0.2,0.3] reversed, [0.1,0.2,1.5,0.9] too big, "
        "[nan,0,1,1] nan, [0.1,0.2,0.3] three, {0.4,0.2} backwards, {0.1,0.2,0.3} three, unclosed [0.1,0.2,"
    )
    r = parse(text)
    assert [b.xyxy for b in r.boxes] == [(0.1, 0.2, 0.3, 0.4)]
    assert r.spans == []
    joined = " | ".join(r.problems)
    for why in ["reversed", "outside 0..1", "non-finite", "4 numbers, got 3", "end before start",
                "2 numbers, got 3", "unclosed"]:
        assert why in joined, why
    assert len(r.problems) == 7


def test_ten_thousand_boxes_are_capped_not_fatal():
    r = parse("x" + "[0.1,0.1,0.2,0.2]" * 10_000)
    assert len(r.boxes) == 1000
    assert any("kept the first 1000" in p for p in r.problems)


garbage_tokens = list("[]{}(),.:-0123456789 abnsx<>/\"'eE+") + ["nan", "inf", '"bbox_2d":', "<box>", "</box>", " to "]


@given(st.lists(st.sampled_from(garbage_tokens), max_size=80).map("".join))
@settings(max_examples=300, deadline=None)
def test_parse_never_raises_on_garbage(text):
    r = parse(text, image_size=(640, 480), duration=10.0)
    for b in r.boxes:
        assert 0 <= b.x1 <= b.x2 <= 1 and 0 <= b.y1 <= b.y2 <= 1
    for s in r.spans:
        assert 0 <= s.start <= s.end <= 1


def test_non_string_input_is_a_problem_not_a_crash():
    assert parse(None).problems  # type: ignore[arg-type]


# --- other systems' formats ----------------------------------------------------------------------


def test_pixel_boxes_need_and_use_the_image_size():
    assert "need the image size" in parse("cat [64.5, 48, 320, 240]").problems[0]
    r = parse("cat [64, 48, 320, 240]", image_size=(640, 480))
    assert r.boxes[0].xyxy == pytest.approx((0.1, 0.1, 0.5, 0.5))
    assert r.boxes[0].phrase == "cat"


def test_qwen_vl_0_to_1000_boxes():
    r = parse("<ref>the cat</ref><box>(100,200),(300,400)</box> and "
              "<|object_ref_start|>a dog<|object_ref_end|><|box_start|>(0,0),(1000,500)<|box_end|>")
    assert [(b.phrase, b.xyxy) for b in r.boxes] == [
        ("the cat", pytest.approx((0.1, 0.2, 0.3, 0.4))),
        ("a dog", pytest.approx((0.0, 0.0, 1.0, 0.5))),
    ]
    # integers beyond 1 with no image size are read as Qwen's 0..1000 grid
    assert parse("[100, 200, 300, 400]").boxes[0].xyxy == pytest.approx((0.1, 0.2, 0.3, 0.4))


def test_bbox_2d_json_pixels_or_1000_grid():
    text = '```json\n[{"bbox_2d": [64, 48, 320, 240], "label": "mug"}, {"bbox_2d": [0, 0, 32, 24], "label": "cup"}]\n```'
    r = parse(text, image_size=(640, 480))
    assert [b.phrase for b in r.boxes] == ["mug", "cup"]
    assert r.boxes[0].xyxy == pytest.approx((0.1, 0.1, 0.5, 0.5))
    r1000 = parse(text, box_frame="norm1000")
    assert r1000.boxes[0].xyxy == pytest.approx((0.064, 0.048, 0.32, 0.24))
    broken = parse('{"bbox_2d": [1, 2, 3], "label": "x"}', image_size=(10, 10))
    assert broken.boxes == [] and broken.problems


def test_spans_in_seconds_and_clock_times():
    r = parse("It rings 12.5s - 17.0s, then from 00:20 to 00:25 and again between 26 and 28 seconds.", duration=40)
    assert [s.to_seconds(40) for s in r.spans] == [
        pytest.approx((12.5, 17.0)), pytest.approx((20.0, 25.0)), pytest.approx((26.0, 28.0))]
    assert r.spans[0].phrase == "It rings"
    assert parse("from 00:12 to 00:17").problems == ["at char 0: span in seconds needs the duration"]
    # numbers with no time unit are not spans
    assert parse("I saw 1 to 2 cats", duration=10).spans == []


def test_span_in_seconds_past_the_end_is_clipped_to_duration():
    r = parse("0:08 - 0:12", duration=10)
    assert r.spans[0].to_seconds(10) == pytest.approx((8.0, 10.0))


# --- frames --------------------------------------------------------------------------------------


def test_pixels_round_trip_and_clip():
    b = Box.from_pixels((64, 48, 320, 240), 640, 480)
    assert b.xyxy == pytest.approx((0.1, 0.1, 0.5, 0.5))
    assert b.to_pixels(640, 480) == pytest.approx((64, 48, 320, 240))
    assert Box.from_pixels((-10, -5, 700, 500), 640, 480).xyxy == (0.0, 0.0, 1.0, 1.0)


def test_padded_square_frame_of_the_original():
    # A 200x100 image is padded to 200x200 with 50 px above and below.
    full = Box(0, 0, 1, 1)
    sq = full.to_padded_square(200, 100)
    assert sq.xyxy == pytest.approx((0.0, 0.25, 1.0, 0.75))
    back = Box.from_padded_square(sq.xyxy, 200, 100)
    assert back.xyxy == pytest.approx(full.xyxy)
    # a box in the padding is clipped onto the image
    assert Box.from_padded_square((0, 0, 0.5, 0.2), 200, 100).xyxy == pytest.approx((0, 0, 0.5, 0.0))
    # parse can do the mapping for model text in the padded frame
    r = parse("cat[0.000,0.250,1.000,0.750]", image_size=(200, 100), padded_square=True)
    assert r.boxes[0].xyxy == pytest.approx((0, 0, 1, 1))


def test_seconds_round_trip():
    s = Span.from_seconds(2.5, 7.5, 10)
    assert (s.start, s.end) == (0.25, 0.75)
    assert s.to_seconds(10) == (2.5, 7.5)
    with pytest.raises(ValueError):
        Span.from_seconds(1, 2, 0)


# --- IoU -----------------------------------------------------------------------------------------


def test_iou_hand_computed():
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert span_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert span_iou((0, 1), (1, 2)) == 0.0  # touching is not overlapping
    # GIoU: disjoint boxes are penalised by the empty part of the hull
    assert box_giou((0, 0, 1, 1), (2, 0, 3, 1)) == pytest.approx(0 - (3 - 2) / 3)
    assert span_giou((0, 1), (3, 4)) == pytest.approx(-0.5)
    assert box_giou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7 - (9 - 7) / 9)


def test_degenerate_intervals():
    assert span_iou((3, 3), (3, 3)) == 1.0
    assert span_iou((3, 3), (4, 4)) == 0.0
    assert box_iou((0.5, 0.5, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5)) == 1.0


# --- properties ----------------------------------------------------------------------------------

unit = st.floats(min_value=0, max_value=1, allow_nan=False)


@st.composite
def boxes(draw):
    x1, x2 = sorted((draw(unit), draw(unit)))
    y1, y2 = sorted((draw(unit), draw(unit)))
    return Box(x1, y1, x2, y2)


@st.composite
def spans(draw):
    a, b = sorted((draw(unit), draw(unit)))
    return Span(a, b)


# No vowels: every connective the parser trims from a phrase ("in", "is", "at", ...) has one, so these
# phrases must come back verbatim; trimming has its own test.
words = st.text(alphabet="bcdfghjklmnpqrstvwxz ", min_size=1, max_size=20).map(str.strip).filter(bool)


@given(st.lists(st.tuples(words, boxes()), min_size=1, max_size=5))
def test_box_format_parse_round_trip(items):
    text = " and ".join(ground_phrase(p, [b]) for p, b in items) + "."
    r = parse(text)
    assert r.ok and len(r.boxes) == len(items)
    for (phrase, b), got in zip(items, r.boxes):
        assert got.xyxy == pytest.approx(b.xyxy, abs=5e-4 + 1e-9)
        assert got.phrase == " ".join(phrase.split()[-12:])


@given(st.lists(spans(), min_size=1, max_size=5))
def test_span_format_parse_round_trip(items):
    r = parse(". ".join(f"event {i} {format_span(s)}" for i, s in enumerate(items)))
    assert r.ok and len(r.spans) == len(items)
    for s, got in zip(items, r.spans):
        assert (got.start, got.end) == pytest.approx((s.start, s.end), abs=5e-3 + 1e-9)


@given(boxes(), boxes())
def test_box_iou_properties(a, b):
    v = box_iou(a, b)
    assert 0 <= v <= 1
    assert v == pytest.approx(box_iou(b, a))
    assert box_iou(a, a) == 1.0
    assert -1 <= box_giou(a, b) <= v + 1e-12


@given(spans(), spans())
def test_span_iou_properties(a, b):
    v = span_iou(a, b)
    assert 0 <= v <= 1
    assert v == pytest.approx(span_iou(b, a))
    assert span_iou(a, a) == 1.0
    assert -1 <= span_giou(a, b) <= v + 1e-12


def test_connectives_are_trimmed_from_phrases():
    r = parse("The dog is at [0.1,0.2,0.3,0.4] and the cat located in [0.5,0.5,0.6,0.6]. Then the bell occurs during {0.10,0.20}")
    assert [b.phrase for b in r.boxes] == ["The dog", "the cat"]
    assert [s.phrase for s in r.spans] == ["the bell"]
