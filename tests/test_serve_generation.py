"""run_batch: rows of one forward pass stop on their own, stream clean text, and can be cancelled."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from omniground.model import build_tiny
from omniground.model.processing_omniground import RequestMeta
from omniground.serve.generation import Row, run_batch, visible_text
from test_serve_support import ScriptedOmniGround, png_bytes


def image_row(og, **kw) -> Row:
    image = Image.open(io.BytesIO(png_bytes(96, 64)))
    return Row([{"role": "user", "content": "<image>\nwhere?"}], [image], RequestMeta(image_size=(96, 64)), **kw)


def test_rows_in_one_batch_keep_their_own_stop_strings_and_limits():
    og = ScriptedOmniGround("alpha beta gamma delta")
    rows = [image_row(og, stop=(" gamma",)), image_row(og), image_row(og, max_tokens=2)]
    a, b, c = run_batch(og, rows)
    assert len(og.calls) == 1 and og.calls[0]["batch"] == 3
    assert (a.text, a.finish_reason) == ("alpha beta", "stop")
    assert (b.text, b.finish_reason) == ("alpha beta gamma delta", "stop")
    assert (c.finish_reason, c.completion_tokens) == ("length", 2)
    assert a.completion_tokens < b.completion_tokens


def test_a_cancelled_row_stops_at_once_and_its_neighbours_finish():
    og = ScriptedOmniGround("x " * 20)
    gone, stays = image_row(og, max_tokens=12), image_row(og, max_tokens=12)
    gone.cancelled.set()
    a, b = run_batch(og, [gone, stays])
    assert a.finish_reason == "cancelled" and a.completion_tokens <= 1
    assert b.finish_reason == "length" and b.completion_tokens == 12


@pytest.fixture(scope="module")
def loc_model():
    torch.manual_seed(0)
    return build_tiny(num_location_bins=101)


def test_streaming_with_location_tokens_never_shows_raw_tokens(loc_model):
    og = ScriptedOmniGround("the dog <|box|><loc_25><loc_25><loc_75><loc_75> sits", base=loc_model)
    pieces: list[str] = []
    [answer] = run_batch(og, [image_row(og, on_text=pieces.append)])
    assert len(pieces) > 2 and not any("<" in p for p in pieces)
    assert "".join(pieces) == answer.text == "the dog [0.250,0.125,0.750,0.875] sits"
    [box] = answer.boxes
    assert box.phrase == "the dog" and answer.boxes_pixels[0] == pytest.approx((24, 8, 72, 56))


def test_visible_text_holds_back_what_may_still_change():
    og = ScriptedOmniGround("")
    meta = RequestMeta(image_size=(96, 64))
    # An unclosed notation is held back: once closed it is reframed to the original image.
    assert visible_text(og.processor, "a cat [0.250,0.25", meta, final=False) == "a cat "
    assert visible_text(og.processor, "a cat [0.250,0.250,0.750,0.750]", meta, final=False) == \
        "a cat [0.250,0.125,0.750,0.875]"
    # A tail that could grow into a stop string, and half a UTF-8 character, wait too.
    assert visible_text(og.processor, "one two EN", meta, final=False, stops=("END",)) == "one two "
    assert visible_text(og.processor, "caf\ufffd", meta, final=False) == "caf"
    assert visible_text(og.processor, "one two END three", meta, final=True, stops=("END",)) == "one two "


def test_a_decline_is_checked_unless_its_start_was_given_and_a_streamed_one_is_held_back_till_then(monkeypatch):
    from omniground.model.api import ChatResult

    og = ScriptedOmniGround("There is no cat in this image.")
    seen = {}

    def overrule(conversations, media, results, rows=None, **kwargs):  # stands for the region pointer's check
        seen["rows"] = rows
        return [ChatResult("The cat is here.", num_tokens=3, overruled=r.text) if i in rows else r
                for i, r in enumerate(results)]

    monkeypatch.setattr(og, "checks_declines", lambda media: True)  # as for an image and a presence-weighing pointer
    monkeypatch.setattr(og, "overrule_declines", overrule)
    shown: list[str] = []
    streamed, prefixed, plain = image_row(og, on_text=shown.append), image_row(og, answer_prefix="The"), image_row(og)
    a, b, c = run_batch(og, [streamed, prefixed, plain])
    assert seen["rows"] == [0, 2]
    assert shown == ["The cat is here."]  # nothing of the decline was shown: it was held back, then replaced
    assert (a.text, c.text, c.completion_tokens, c.finish_reason) == ("The cat is here.",) * 2 + (3, "stop")
    assert b.text.startswith("The") and "cat is here" not in b.text
    # an answer that is no decline streams as before, its first word held only until it cannot open one
    og.answer, pieces = "The red cat sits on the mat.", []
    [answer] = run_batch(og, [image_row(og, on_text=pieces.append)])
    assert len(pieces) > 2 and "".join(pieces) == answer.text == "The red cat sits on the mat."
    assert pieces[0].startswith("The ") and len(pieces[0].strip()) > 3


def test_a_grounding_answer_that_writes_no_box_is_asked_for_it(monkeypatch):
    from omniground.grounding import Box
    from omniground.model.api import ChatResult

    og = ScriptedOmniGround("is a cat.")
    seen = {}

    def asked(conversations, media, results, answer_prefixes, **kwargs):  # stands for the re-ask with <|box|>
        seen["starts"] = answer_prefixes
        return [ChatResult("The cat[0.100,0.200,0.300,0.400].", [Box(0.1, 0.2, 0.3, 0.4, score=0.9)], num_tokens=6,
                           overruled=r.text) if start else r for r, start in zip(results, answer_prefixes)]

    monkeypatch.setattr(og, "location_after_start", asked)
    prefixed, plain = image_row(og, answer_prefix="The cat"), image_row(og)
    a, b = run_batch(og, [prefixed, plain])
    assert seen["starts"] == ["The cat", None]
    assert (a.text, len(a.boxes), a.boxes[0].score, a.completion_tokens) == ("The cat[0.100,0.200,0.300,0.400].", 1,
                                                                             0.9, 6)
    assert b.text == "is a cat." and not b.boxes
