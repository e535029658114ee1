"""`region_mirror`: each box is chosen from the region pointer's view of the image and of its mirror image, the
text said of the mirror ("left" and "right" swapped, boxes mirrored)."""

import re

import numpy as np
import pytest
import torch
from micro import image, micro_model, video
from PIL import Image

from omniground.model.modeling_omniground import choose_region, mirrored_boxes, with_mirror_view
from omniground.model.processing_omniground import RequestMeta
from omniground.model.tokenizer import BOX_TOKEN

from test_model_regions import _prompts_ending_in_a_box, _reread_model


def test_mirrored_text_swaps_left_and_right_and_mirrors_boxes():
    proc = micro_model(region_boxes=True).processor  # 16 location bins: the last is 15
    said = proc.mirrored_text("The second cat from the Left is the LEFTMOST, right? Alright, lefty.", (48, 32))
    assert said == "The second cat from the Right is the RIGHTMOST, left? Alright, lefty."
    # location tokens are in the model's square frame: bin k becomes 15 - k, x1 and x2 trading places
    assert proc.mirrored_text(f"it{BOX_TOKEN}<loc_1><loc_2><loc_5><loc_9>.", None) == \
        f"it{BOX_TOKEN}<loc_10><loc_2><loc_14><loc_9>."
    # the grounding language's boxes are normalised to the image, whose mirror is itself mirrored the same way
    assert proc.mirrored_text("the cat[0.100,0.200,0.300,0.400] left", (48, 32)) == \
        "the cat[0.700,0.200,0.900,0.400] right"
    text = f"the dog to the left of the cat[0.100,0.200,0.300,0.400]{BOX_TOKEN}<loc_0><loc_3><loc_4><loc_7>"
    assert proc.mirrored_text(proc.mirrored_text(text, (48, 32)), (48, 32)) == text  # twice: as it was


@pytest.mark.parametrize("w, h", [(48, 32), (32, 48)])
def test_a_mirrored_request_is_the_mirror_image_and_what_is_said_of_it(w, h):
    proc = micro_model(region_boxes=True).processor
    picture = image(2, w=w, h=h)
    conv = [{"role": "user", "content": "<image>\nWhere is the cat to the left of [0.100,0.200,0.300,0.400]?"}]
    mirrored, _ = proc.prepare([conv], [[picture]], answer_prefixes=[f"The cat{BOX_TOKEN}"], mirror=True)
    said = [{"role": "user", "content": "<image>\nWhere is the cat to the right of [0.700,0.200,0.900,0.400]?"}]
    by_hand, _ = proc.prepare([said], [[picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]],
                              answer_prefixes=[f"The cat{BOX_TOKEN}"])
    assert mirrored["input_ids"].tolist() == by_hand["input_ids"].tolist()
    # the padded square is centred, so the mirror of the square is the square of the mirror (to resampling)
    torch.testing.assert_close(mirrored["pixel_values"], by_hand["pixel_values"], atol=0.05, rtol=0)
    plain, _ = proc.prepare([conv], [[picture]], answer_prefixes=[f"The cat{BOX_TOKEN}"])
    assert torch.equal(mirrored["pixel_values"], plain["pixel_values"].flip(-1))
    assert not torch.equal(mirrored["pixel_values"], plain["pixel_values"])


def test_both_views_candidates_are_chosen_from_in_one_frame():
    boxes = torch.tensor([[[0.1, 0.1, 0.3, 0.3], [0.7, 0.1, 0.9, 0.4]]])  # a cat on the left, one on the right
    assert torch.allclose(mirrored_boxes(boxes), torch.tensor([[[0.7, 0.1, 0.9, 0.3], [0.1, 0.1, 0.3, 0.4]]]))
    probs = torch.tensor([[0.55, 0.35, 0.10]])  # this view: the left cat, a little; 0.10 "nothing here"
    assert choose_region(probs, boxes, 11) == ([[1, 1, 3, 3]], [pytest.approx(0.55)])
    # the mirror view is sure of its left cat: in this frame the right one
    mirror_probs = torch.tensor([[0.85, 0.05, 0.10]])
    both, candidates = with_mirror_view(probs, boxes, mirror_probs, boxes)
    assert both.shape == (1, 4) and candidates.shape == (1, 4, 4)
    assert both.sum() == pytest.approx(0.9)  # "nothing here" keeps the mean of its shares, outside
    (bins,), (confidence,) = choose_region(both, candidates, 11)
    # the right cat, which both views' probability agrees on (the original's 0.35 and the mirror's 0.85, halved)
    assert bins == [7, 1, 9, 3] and confidence == pytest.approx((0.35 + 0.85) / 2)


def test_the_region_view_reads_what_generation_reads():
    og = _reread_model()
    m, n = og.model, og.model.config.num_location_bins
    inputs = _prompts_ending_in_a_box(og)  # left-padded: row 1's prompt is shorter
    with torch.no_grad():
        out = m.generate(**inputs, max_new_tokens=4, do_sample=False)[:, -4:]
        confidences = [c["box"] for c in m.pointer_confidences()]
        probs, boxes = m.region_view(**inputs)
    bins, confidence = choose_region(probs, boxes, n)
    assert [[og.model.config.loc_token_start_id + b for b in row] for row in bins] == out.tolist()
    assert [[c] for c in confidence] == [[pytest.approx(c[0], rel=1e-5)] for c in confidences]


def _views(og, conv, picture, start):
    """The original and the mirrored view of a prompt whose answer starts with `start` (ending in the marker)."""
    plain, _ = og.processor.prepare([conv], [[picture]], answer_prefixes=[start])
    mirrored, _ = og.processor.prepare([conv], [[picture]], answer_prefixes=[start], mirror=True)
    with torch.no_grad():
        return og.model.region_view(**plain), og.model.region_view(**mirrored)


def test_generation_chooses_each_box_from_both_views():
    og = _reread_model(seed=5)
    m, n = og.model, og.model.config.num_location_bins
    conv = [{"role": "user", "content": "<image>\nWhere is the cat on the left?"}]
    picture, start = image(3, w=48, h=32), f"The leftmost cat{BOX_TOKEN}"
    (probs, boxes), (mirror_probs, mirror_boxes) = _views(og, conv, picture, start)
    want_bins, want_confidence = choose_region(*with_mirror_view(probs, boxes, mirror_probs, mirror_boxes), n)
    alone_bins, _ = choose_region(probs, boxes, n)
    assert want_bins != alone_bins  # the mirror view moves this box: the test tells the two apart

    seen = []
    make_view = og.mirror_view

    def recording(*args):  # what generate() asks the mirror view, passed on
        view = make_view(*args)
        return lambda row, generated: (seen.append((row, list(generated))), view(row, generated))[1]

    og.mirror_view = recording  # 4 new tokens: the box's, forced (this random LM would write more after them)
    answer = og.chat(conv, [picture], answer_prefixes=[start], max_new_tokens=4, region_mirror=True,
                     check_declines=False)
    assert seen == [(0, [])]  # once, at the marker the answer's start ends with
    written = re.search(r"\[([\d.,]+)\]", answer.model_text).group(1)
    assert [round(float(v) * (n - 1)) for v in written.split(",")] == want_bins[0]
    assert answer.boxes[0].score == pytest.approx(want_confidence[0], rel=1e-5)
    assert m.mirror_view is None  # set for one generate() call only

    plain = og.chat(conv, [picture], answer_prefixes=[start], max_new_tokens=4, check_declines=False)
    assert plain.model_text != answer.model_text  # the model's config says no mirror: one view
    m.config.region_mirror = True
    assert og.chat(conv, [picture], answer_prefixes=[start], max_new_tokens=4,
                   check_declines=False).model_text == answer.model_text


def test_the_mirror_view_is_only_for_answers_on_one_image():
    og = _reread_model()
    two, none = [{"role": "user", "content": "<image><image>\nWhich?"}], [{"role": "user", "content": "Hi"}]
    both = [{"role": "user", "content": "<image><video>\nWhich?"}]
    meta = RequestMeta()  # no answer start given
    view = og.mirror_view([two, none, both], [[image(0), image(1)], None, [image(0), video()]], [meta] * 3)
    box = og.tokenizer.convert_tokens_to_ids(BOX_TOKEN)
    assert view(0, [box]) is None and view(1, [box]) is None  # two images, none
    assert view(2, [box]) is None  # an image and a video, whose frames are not mirrored
    single = og.mirror_view([[{"role": "user", "content": "<image>\nWhich?"}]], [[image(0)]], [meta])
    assert single(0, og.tokenizer.encode("the cat", add_special_tokens=False)) is None  # not at a box marker
    probs, boxes = single(0, og.tokenizer.encode("the cat", add_special_tokens=False) + [box])
    assert probs.shape[0] == 1 and boxes.shape[-1] == 4 and np.isclose(float(probs.sum()), 1.0, atol=1e-5)


def test_a_batch_gets_each_rows_own_mirror_view():
    og = _reread_model(seed=5)
    convs = [[{"role": "user", "content": "<image>\nWhere is the cat on the left?"}],
             [{"role": "user", "content": "<image>\nAnd the dog on the right, next to it?"}]]
    media, starts = [[image(3, w=48, h=32)], [image(4, w=32, h=48)]], [f"The cat{BOX_TOKEN}", f"The dog{BOX_TOKEN}"]
    kw = dict(max_new_tokens=4, region_mirror=True, check_declines=False)
    together = og.chat_batch(convs, media, answer_prefixes=starts, **kw)  # left-padded: row 0's prompt is shorter
    alone = [og.chat(c, m, answer_prefixes=[s], **kw) for c, m, s in zip(convs, media, starts)]
    assert [r.model_text for r in together] == [r.model_text for r in alone]
    assert [r.boxes[0].score for r in together] == pytest.approx([r.boxes[0].score for r in alone], rel=1e-4)
    assert together[0].model_text != together[1].model_text
