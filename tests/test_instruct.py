"""Instruction templates: many phrasings per task, all three stages, locations written only by the grounding module."""

import random
import re

import pytest

from omniground.data import instruct
from omniground.data.schema import Sample
from omniground.grounding import Box, Span, format_box, format_span, parse

SLOTS = {
    "phrase": "the red cat",
    "items": [Box(0.1, 0.2, 0.3, 0.4), Box(0.5, 0.5, 0.9, 0.8)],
    "query": "the bell rings.",
    "caption": "A picture of grass with a cat[0.100,0.200,0.300,0.400].",
}


def test_every_task_has_thirty_distinct_questions_and_every_stage_is_covered():
    for name, t in instruct.TEMPLATES.items():
        assert len(set(t.questions)) >= 30, name
        assert len(set(q.lower() for q in t.questions)) == len(t.questions), f"{name}: duplicate phrasings"
        assert t.answers
    assert {t.stage for t in instruct.TEMPLATES.values()} == {1, 2, 3}


def test_present_and_absent_phrases_are_asked_the_same_questions():
    """A question asked only of absent phrases ("Is there ...?") lets the model decline on its wording."""
    assert set(instruct.TEMPLATES["rec"].questions) == set(instruct.TEMPLATES["negative"].questions)
    assert any(q.startswith("Is there") for q in instruct.TEMPLATES["rec"].questions)


@pytest.mark.parametrize("task", sorted(instruct.TEMPLATES))
def test_every_phrasing_fills_its_slots_and_writes_locations_exactly(task):
    t = instruct.TEMPLATES[task]
    items = [Span(0.25, 0.5)] if "video" in task or "audio" in task else SLOTS["items"]
    slots = dict(SLOTS, items=items, caption=instruct.grounded_text(["Here is ", ("a thing", items), "."]))
    expected = [format_box(i) if isinstance(i, Box) else format_span(i) for i in slots["items"]]
    values = instruct._slots(slots)
    for template in t.questions + t.answers:
        text = template.format(**values)
        leftover = re.sub(r"\[[\d.,]+\]|\{[\d.,]+\}|\{start, end\}", "", text)
        assert "{" not in leftover and "}" not in leftover, (task, template)
        assert "the the" not in text.lower() and "a the" not in text.lower(), text
        found = parse(text)
        assert not found.problems, (template, found.problems)
        written = [format_box(b) for b in found.boxes] + [format_span(s) for s in found.spans]
        assert written in ([], expected), (template, written)  # all of the items, in order, or none


def test_render_is_deterministic_and_varied():
    a = [instruct.render("rec", random.Random(k), **SLOTS) for k in range(200)]
    b = [instruct.render("rec", random.Random(k), **SLOTS) for k in range(200)]
    assert a == b
    assert len({q for q, _ in a}) >= 25 and len({ans for _, ans in a}) >= 5
    for q, ans in a:
        assert "red cat" in q
        assert [format_box(x) for x in parse(ans).boxes] == [format_box(i) for i in SLOTS["items"]]
    with pytest.raises(ValueError, match="unknown task"):
        instruct.render("nope", random.Random(0))


def test_dialogue_makes_a_valid_stage_three_sample():
    box, span = Box(0.1, 0.2, 0.3, 0.4), Span(0.2, 0.6)
    rng = random.Random(3)
    pairs = instruct.dialogue(
        [
            ("rec", {"phrase": "dog", "items": [box]}),
            ("reg", {"phrase": "dog", "items": [box]}),
            ("negative", {"phrase": "blue car"}),
        ],
        rng,
    )
    assert len(pairs) == 3 and all(q and a for q, a in pairs)
    turns = instruct.conversation(pairs, ["image"])
    assert turns[0]["content"].startswith("<image>\n") and all("<image>" not in t["content"] for t in turns[1:])
    s = Sample(
        id="d",
        media=[{"type": "image", "path": "x.png", "width": 10, "height": 10}],
        conversation=turns,
        boxes=[{"phrase": "dog", "box": box.xyxy}],
        task="dialogue",
        stage=instruct.stage_of("video_event"),
        source="synth",
        license="CC0-1.0",
    )
    assert s.stage == 3
    video = instruct.dialogue(
        [
            ("video_grounding", {"query": "the cat moves", "items": [span]}),
            ("video_event", {"query": "the dog is red", "items": [span]}),
        ],
        rng,
    )
    assert parse(video[0][1]).spans[0].start == pytest.approx(0.2)
    assert "the dog is red" in video[1][1].lower() and format_span(span) in video[1][0]


def test_grounded_text_joins_phrases_and_items():
    text = instruct.grounded_text(
        ["A ", ("cat", [Box(0, 0, 0.5, 0.5)]), " and ", ("two dogs", [Box(0.5, 0.5, 1, 1)] * 2)]
    )
    assert text == "A cat[0.000,0.000,0.500,0.500] and two dogs[0.500,0.500,1.000,1.000][0.500,0.500,1.000,1.000]"


def test_every_decline_the_negatives_write_reads_back_its_phrase_and_nothing_else_does():
    for phrase in ("red cat", "orange umbrella to the left of the dog"):
        declines = {instruct.render("negative", random.Random(k), phrase=phrase)[1] for k in range(200)}
        assert len(declines) == len(instruct.TEMPLATES["negative"].answers)
        for text in declines:
            assert instruct.decline_phrase(text) == phrase, text
            assert instruct.decline_phrase(text.upper() + "  ") == phrase.upper()
    for task in ("rec", "reg"):
        for k in range(50):
            _, answer = instruct.render(task, random.Random(k), **SLOTS)
            assert instruct.decline_phrase(answer) is None, answer
    assert instruct.decline_phrase("There is no cat in this image, but a dog.") is None  # the whole answer only


def test_an_answers_start_may_decline_until_it_leaves_every_declines_opening_words():
    decline = "The image does not contain a red cat."
    assert all(instruct.might_decline(decline[:n]) for n in range(len(decline) + 1))
    assert instruct.might_decline("No") and instruct.might_decline("  sorry, no red")
    assert not instruct.might_decline("The red cat") and not instruct.might_decline("A red cat is at")
