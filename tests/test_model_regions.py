"""`region_boxes`: a box on the image is a pointer at one of its patches, read off a box regressor."""

import pytest
import torch
from micro import audio, image, labelled_batch, micro_model, turn

from omniground.model import OmniGround
from omniground.grounding.geometry import box_iou
from omniground.model.modeling_omniground import (RegionPointer, box_bins, pairwise_box_iou, region_targets,
                                                 text_before, written_since)

CONVS = [turn("<image>\nWhere is the cat?", "the cat[0.100,0.200,0.500,0.600]"),
         turn("Say hi.", "hi"),
         turn("<image>\nWhere are the dogs?", "dogs[0.300,0.100,0.900,0.700] and[0.000,0.500,0.250,1.000]")]
MEDIA = [[image(0)], None, [image(1)]]


def batch(og):
    return labelled_batch(og, CONVS, MEDIA)


def spread_boxes(og, seed=1):
    """Random box regressor weights, large enough that the patches' boxes differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in og.model.region_pointer.box.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def _hidden(m, inputs, patches):
    """The LM's last hidden states for `inputs`, by hand: image tokens written over their placeholders."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    embeds = m.get_input_embeddings()(ids).masked_scatter((ids == m.config.image_token_id)[..., None],
                                                          m.project_images(patches))
    return m.language_model.get_decoder()(inputs_embeds=embeds, attention_mask=mask,
                                          position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).last_hidden_state


@torch.no_grad()
def _loss_parts_by_hand(m, inputs):
    """What the training loss of `batch` is made of, by hand: the LM's loss alone, the hidden states, the
    images' patch features, the three answer boxes' rows (0 and 2), positions, images and targets."""
    pointer, m.region_pointer = m.region_pointer, None
    lm_loss = m(**inputs).loss
    m.region_pointer = pointer
    patches = m.vision_tower(inputs["pixel_values"])
    ids, cfg = inputs["input_ids"], m.config
    hidden = _hidden(m, inputs, patches)
    rows, pos = (ids == cfg.box_token_id).nonzero(as_tuple=True)
    assert rows.tolist() == [0, 2, 2]
    image_of_row = torch.tensor([0, 1, 1])
    target = (torch.stack([ids[r, p + 1 : p + 5] for r, p in zip(rows, pos)]) - cfg.loc_token_start_id) / (
        cfg.num_location_bins - 1)
    return lm_loss, hidden, patches, rows, pos, image_of_row, target


def test_flag_adds_only_the_region_pointer_and_checks_its_needs():
    plain, regions = micro_model(), micro_model(region_boxes=True)
    assert plain.model.region_pointer is None
    extra = set(regions.model.state_dict()) - set(plain.model.state_dict())
    assert extra and all(k.startswith("region_pointer.") for k in extra)
    with pytest.raises(ValueError, match="num_location_bins"):
        micro_model(num_location_bins=0, region_boxes=True)
    with pytest.raises(ValueError, match="location_pointer"):
        micro_model(region_boxes=True, location_pointer=True)


def test_region_targets_are_the_patches_whose_box_is_right_else_the_centre_patch():
    boxes = torch.tensor([[[0, 0, 0.5, 0.5], [0.05, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0, 1, 1]]])  # 2x2 grid
    good = region_targets(boxes, torch.tensor([[0, 0, 0.5, 0.5]]))
    assert good.tolist() == [[True, True, False, False]]
    # no patch's box is right: the patch holding the centre (0.8, 0.3) -> column 1, row 0 = patch 1
    assert region_targets(boxes, torch.tensor([[0.7, 0.2, 0.9, 0.4]])).tolist() == [[False, True, False, False]]
    assert pairwise_box_iou(boxes, torch.tensor([[0, 0, 1, 1.0]]))[0, 3] == 1.0
    assert box_bins(torch.tensor([0.9, 0.1, 0.2, 0.5]), 11) == [2, 1, 9, 5]  # ordered
    assert box_bins(torch.tensor([0.5, 0.5, 0.5, 1.2]), 11) == [5, 5, 6, 10]  # one bin wide, clamped


def test_written_since_reads_how_far_a_box_is_written():
    box, loc, n = 5, 10, 4  # <|box|> = 5, <loc_0..3> = 10..13
    assert written_since([box], box, loc, n, 4) == 0  # a decode step that just wrote <|box|>
    assert written_since([1, box, 10], box, loc, n, 4) == 1
    assert written_since([1, box, 10, 11, 12], box, loc, n, 4) == 3
    assert written_since([1, box, 10, 11, 12, 13], box, loc, n, 4) is None  # complete
    assert written_since([10], box, loc, n, 4) is None  # a decode step inside a box: the cache knows
    assert written_since([1, 2], box, loc, n, 4) is None


def test_training_loss_adds_the_pointer_loss_of_every_target_box_and_trains_pointer_not_regressor():
    og = micro_model(region_boxes=True)
    m = og.model
    spread_boxes(og)
    m.config.train_encoders = False
    m.set_stage(2)
    assert not any(p.requires_grad for p in m.region_pointer.box.parameters())  # trained in stage 0
    assert all(p.requires_grad for p in m.region_pointer.query.parameters())
    inputs = batch(og)
    out = m(**inputs)
    # the same loss by hand: LM loss + pointer loss over the three answer boxes (rows 0 and 2)
    rp = m.region_pointer
    lm_loss, hidden, patches, rows, pos, image_of_row, target = _loss_parts_by_hand(m, inputs)
    with torch.no_grad():
        want = lm_loss + rp.loss(hidden[rows, pos], patches[image_of_row],
                                 rp.boxes(patches)[image_of_row], target)
    torch.testing.assert_close(out.loss, want, rtol=1e-4, atol=1e-4)
    out.loss.backward()
    assert rp.query[1].weight.grad.abs().sum() > 0 and rp.key[1].weight.grad.abs().sum() > 0


def _prompts_ending_in_a_box(og):
    inputs, _ = og.processor.prepare(
        [[{"role": "user", "content": "<image>\nWhere is the cat?"}], [{"role": "user", "content": "<image>\nAnd?"}]],
        [[image(0)], [image(1, w=32, h=48)]], add_generation_prompt=True, padding_side="left",
    )
    box = torch.full((2, 1), og.model.config.box_token_id)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], box], 1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(box)], 1)
    return inputs


def test_generation_writes_the_box_of_the_patch_the_pointer_chooses():
    og = micro_model(region_boxes=True)
    m, cfg = og.model, og.model.config
    spread_boxes(og)
    inputs = _prompts_ending_in_a_box(og)
    with torch.no_grad():
        out = m.generate(**inputs, max_new_tokens=4, do_sample=False)[:, -4:]
        # what the pointer chooses, by hand, from the hidden state at the final <|box|>
        patches = m.vision_tower(inputs["pixel_values"])
        dec = _hidden(m, inputs, patches)[:, -1]
        rp = m.region_pointer
        boxes = rp.boxes(patches)
        probs = rp.logits(dec, patches).softmax(-1)
    for r in range(2):  # the patch box of highest expected IoU with the pointer's answer
        box, p = boxes[r].tolist(), probs[r].tolist()
        iou = lambda a, b: box_iou(a, b) if (a[2] - a[0]) * (a[3] - a[1]) > 0 else 0.0  # noqa: E731 (no area: no overlap)
        expected = [sum(q * iou(box[c], box[k]) for k, q in enumerate(p)) for c in range(len(box))]
        choice = max(range(len(box)), key=expected.__getitem__)
        want = [cfg.loc_token_start_id + b for b in box_bins(boxes[r, choice], cfg.num_location_bins)]
        assert out[r].tolist() == want
    assert len({tuple(b) for b in out.tolist()}) == 2  # the two images' boxes differ
    # without a KV cache (every step a full forward) the same tokens come out; one row alone too
    with torch.no_grad():
        nocache = m.generate(**inputs, max_new_tokens=4, do_sample=False, use_cache=False)[:, -4:]
        single = {k: v[1:] for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        single["pixel_values"] = inputs["pixel_values"][1:]
        alone = m.generate(**single, max_new_tokens=4, do_sample=False)[:, -4:]
    assert nocache.tolist() == out.tolist()
    assert alone[0].tolist() == out[1].tolist()


def test_the_written_box_is_the_one_most_of_the_pointers_probability_agrees_with():
    rp = RegionPointer(vision_dim=4, hidden=4)
    # one patch alone has the most probability (0.4), far off; three others share one object (0.2 each)
    rp.logits = lambda hidden, patches: torch.tensor([[0.4, 0.2, 0.2, 0.2]]).log()
    boxes = torch.tensor([[0.6, 0.6, 0.9, 0.9], [0.1, 0.1, 0.4, 0.4], [0.1, 0.1, 0.42, 0.4], [0.12, 0.1, 0.4, 0.4]])
    bins, confidence = rp.choose(torch.zeros(4), torch.zeros(4, 4), boxes, 11)
    # expected IoU: 0.37 for the lone patch's box; 0.574, 0.5625, 0.562 for the three others'
    assert bins == [1, 1, 4, 4] and confidence == pytest.approx(0.6)
    rp.logits = lambda hidden, patches: torch.tensor([[0.7, 0.1, 0.1, 0.1]]).log()  # now the lone one wins
    assert rp.choose(torch.zeros(4), torch.zeros(4, 4), boxes, 11) == ([6, 6, 9, 9], pytest.approx(0.7))
    # the confidence is the mass agreeing with the chosen box, not with the first patch's (0.3 + 0.25 if it were)
    rp.logits = lambda hidden, patches: torch.tensor([[0.3, 0.25, 0.25, 0.2]]).log()
    assert rp.choose(torch.zeros(4), torch.zeros(4, 4), boxes, 11) == ([1, 1, 4, 4], pytest.approx(0.7))


def test_the_written_box_is_the_regressed_box_and_survives_save_and_load(tmp_path):
    og = micro_model(region_boxes=True)
    m, cfg = og.model, og.model.config
    with torch.no_grad():  # every patch regresses the same box: (0.25, 0.5) - (0.75, 1.0) of the square
        m.region_pointer.box[-1].weight.zero_()
        m.region_pointer.box[-1].bias.copy_(torch.logit(torch.tensor([0.25, 0.5, 0.75, 1.0]).clamp(1e-4, 1 - 1e-4)))
        ids = m.generate(**_prompts_ending_in_a_box(og), max_new_tokens=4, do_sample=False)[0, -4:]
    text = og.processor.decode(torch.cat([torch.tensor([cfg.box_token_id]), ids]))
    n = cfg.num_location_bins - 1
    assert text == "[{:.3f},{:.3f},{:.3f},{:.3f}]".format(
        round(0.25 * n) / n, round(0.5 * n) / n, round(0.75 * n) / n, 1.0)
    og.save_pretrained(tmp_path)
    back = OmniGround.from_pretrained(tmp_path)
    assert back.model.config.region_boxes is True
    for k, v in og.model.region_pointer.state_dict().items():
        torch.testing.assert_close(back.model.region_pointer.state_dict()[k], v)


def test_a_region_box_scores_the_pointers_confidence_not_its_forced_tokens():
    from transformers import LogitsProcessor, LogitsProcessorList

    og = micro_model(region_boxes=True)
    m, cfg = og.model, og.model.config
    spread_boxes(og)

    class BoxFirst(LogitsProcessor):  # the micro LM would not start with a box by itself
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] == start_len:
                scores = torch.full_like(scores, float("-inf"))
                scores[:, cfg.box_token_id] = 0.0
            return scores

    question = [{"role": "user", "content": "<image>\nWhere is the cat?"}]
    start_len = og.processor.prepare([question], [[image(0)]], add_generation_prompt=True)[0]["input_ids"].shape[1]
    result = og.chat(question, [image(0)], max_new_tokens=5, logits_processor=LogitsProcessorList([BoxFirst()]))
    assert len(result.boxes) == 1
    (confidence,) = m.pointer_confidences()[0]["box"]
    assert result.boxes[0].score == pytest.approx(confidence) and 0 < confidence < 0.99
    # by hand: the pointer's probability of the patches whose box agrees with the chosen one's
    with torch.no_grad():
        inputs = _prompts_ending_in_a_box(og)
        patches = m.vision_tower(inputs["pixel_values"])
        probs = m.region_pointer.logits(_hidden(m, inputs, patches)[:1, -1], patches[:1])
        probs = probs.softmax(-1)[0]
        boxes = m.region_pointer.boxes(patches)[0]
        agree = pairwise_box_iou(boxes[None].expand(len(boxes), -1, -1), boxes)  # (P, P)
        choice = (agree @ probs).argmax()  # the written box: highest expected IoU
        same = agree[choice] >= 0.5
        same[choice] = True
    assert confidence == pytest.approx(float(probs[same].sum()), rel=1e-4)


def test_presence_weighs_nothing_here_beside_the_patches_and_keeps_the_box_chosen():
    with pytest.raises(ValueError, match="region_presence needs region_boxes"):
        micro_model(region_presence=True)
    og = micro_model(region_boxes=True, region_presence=True)
    assert set(og.model.region_pointer.absent.state_dict()) == {"weight", "bias"}
    torch.manual_seed(0)
    rp = RegionPointer(vision_dim=4, hidden=4, presence=True).requires_grad_(False)
    hidden, patches = torch.randn(2, 4), torch.randn(2, 4, 4)
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 0.5], [0.0, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]])
    boxes = boxes.expand(2, -1, -1)
    logits = rp.logits(hidden, patches)
    assert logits.shape == (2, 5)
    # target all -1: the phrase names nothing, so the right answer is the last candidate, "nothing here"
    target = torch.tensor([[0.0, 0.0, 0.5, 0.5], [-1.0, -1.0, -1.0, -1.0]])
    lp = logits.log_softmax(-1)
    assert float(rp.loss(hidden, patches, boxes, target)) == pytest.approx(float(-(lp[0, 0] + lp[1, 4]) / 2), rel=1e-5)
    # the written box is the one the patches alone choose; its confidence leaves "nothing here" its share
    plain = RegionPointer(vision_dim=4, hidden=4).requires_grad_(False)
    plain.load_state_dict({k: v for k, v in rp.state_dict().items() if not k.startswith("absent.")})
    rp.absent.weight.zero_()
    rp.absent.bias.fill_(5.0)
    spread = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 0.5], [0.0, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]])
    (bins, conf), (plain_bins, plain_conf) = (h.choose(hidden[0], patches[0], spread, 11) for h in (rp, plain))
    assert bins == plain_bins
    patch_logits = plain.logits(hidden[:1], patches[:1])[0]
    share = float(patch_logits.exp().sum() / (patch_logits.exp().sum() + torch.tensor(5.0).exp()))
    assert conf == pytest.approx(plain_conf * share, rel=1e-5) and conf < plain_conf


def test_text_before_keeps_each_markers_text_tokens_up_to_it_in_order():
    hidden = torch.arange(2 * 5, dtype=torch.float).view(2, 5, 1)  # state = 5 * row + position
    is_text = torch.tensor([[True, False, True, True, True], [False, True, True, True, True]])
    text, mask = text_before(hidden, is_text, torch.tensor([0, 1, 0]), torch.tensor([3, 2, 0]))
    assert text.shape == (3, 3, 1)
    assert [t[m].flatten().tolist() for t, m in zip(text, mask)] == [[0, 2, 3], [6, 7], [0]]
    assert mask.tolist() == [[True, True, True], [True, True, False], [True, False, False]]


def _reread_model(seed=3):
    """A region model whose query re-reads the text, its pointer's weights random and large enough that what
    it reads moves the patches' probabilities (`out` starts at zero; the micro init gives near-uniform ones)."""
    og = micro_model(region_boxes=True, region_reread=True)
    spread_boxes(og)
    g = torch.Generator().manual_seed(seed)
    rp = og.model.region_pointer
    with torch.no_grad():
        for part, scale in ((rp.reread, 0.3), (rp.query, 0.2), (rp.key, 0.2)):
            for p in part.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return og


def test_reread_starts_as_a_no_op_and_needs_region_boxes():
    with pytest.raises(ValueError, match="region_reread needs region_boxes"):
        micro_model(region_reread=True)
    plain, reread = micro_model(region_boxes=True), micro_model(region_boxes=True, region_reread=True)
    spread_boxes(plain)
    missing = reread.model.load_state_dict(plain.model.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("region_pointer.reread.") for k in missing)
    inputs = _prompts_ending_in_a_box(plain)
    with torch.no_grad():
        a, b = (og.model.generate(**inputs, max_new_tokens=4, do_sample=False) for og in (plain, reread))
    assert a.tolist() == b.tolist()


def test_reread_training_loss_reads_each_boxs_text_up_to_it():
    og = _reread_model()
    m, cfg = og.model, og.model.config
    inputs = batch(og)
    lm_loss, hidden, patches, rows, pos, image_of_row, target = _loss_parts_by_hand(m, inputs)
    with torch.no_grad():
        out = m(**inputs)
        ids = inputs["input_ids"]
        is_text = (ids != cfg.image_token_id) & inputs["attention_mask"].bool()
        text = text_before(hidden, is_text, rows, pos)
        rp = m.region_pointer
        args = (hidden[rows, pos], patches[image_of_row], rp.boxes(patches)[image_of_row], target)
        want = lm_loss + rp.loss(*args, *text)
        without = lm_loss + rp.loss(*args, *(torch.zeros_like(t) for t in text[:1]), torch.ones_like(text[1]))
    torch.testing.assert_close(out.loss, want, rtol=1e-4, atol=1e-4)
    assert abs(float(out.loss - without)) > 1e-3  # what it reads matters


def test_reread_generation_chooses_from_the_same_text_as_training():
    og = _reread_model()
    m, cfg = og.model, og.model.config
    inputs = _prompts_ending_in_a_box(og)  # left-padded: row 1's prompt is shorter
    with torch.no_grad():
        out = m.generate(**inputs, max_new_tokens=4, do_sample=False)[:, -4:]
        confidences = [c["box"] for c in m.pointer_confidences()]
        patches = m.vision_tower(inputs["pixel_values"])
        hidden = _hidden(m, inputs, patches)
        ids = inputs["input_ids"]
        is_text = (ids != cfg.image_token_id) & inputs["attention_mask"].bool()
        last = torch.full((2,), ids.shape[1] - 1)
        text, mask = text_before(hidden, is_text, torch.arange(2), last)
        rp = m.region_pointer
        boxes = rp.boxes(patches)
        for r in range(2):
            bins, confidence = rp.choose(hidden[r, -1], patches[r], boxes[r], cfg.num_location_bins,
                                         text[r, mask[r]], mask[r, mask[r]])
            assert out[r].tolist() == [cfg.loc_token_start_id + b for b in bins]
            assert confidences[r] == [pytest.approx(confidence, rel=1e-5)]  # the same probabilities
        nocache = m.generate(**inputs, max_new_tokens=4, do_sample=False, use_cache=False)[:, -4:]
        single = {k: v[1:] for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        single["pixel_values"] = inputs["pixel_values"][1:]
        alone = m.generate(**single, max_new_tokens=4, do_sample=False)[:, -4:]
    assert nocache.tolist() == out.tolist() and alone[0].tolist() == out[1].tolist()


def test_more_heads_answer_together_their_probabilities_averaged():
    with pytest.raises(ValueError, match="region_heads 2: needs region_boxes"):
        micro_model(region_heads=2)
    with pytest.raises(ValueError, match="region_heads 0"):
        micro_model(region_boxes=True, region_heads=0)
    assert not any(".more." in k for k in micro_model(region_boxes=True).model.state_dict())  # one head: as before
    rp = RegionPointer(vision_dim=4, hidden=4, heads=3)
    assert len(rp.members()) == 3 and all(m.box is None and not m.more for m in rp.more)
    # the lone far box is the first head's favourite; the other two put their mass on the object of three patches
    boxes = torch.tensor([[0.6, 0.6, 0.9, 0.9], [0.1, 0.1, 0.4, 0.4], [0.1, 0.1, 0.42, 0.4], [0.12, 0.1, 0.4, 0.4]])
    for m, p in zip(rp.members(), ([0.7, 0.1, 0.1, 0.1], [0.4, 0.2, 0.2, 0.2], [0.1, 0.3, 0.3, 0.3])):
        m.logits = lambda hidden, patches, p=p: torch.tensor([p]).log()
    alone = RegionPointer(vision_dim=4, hidden=4)
    alone.logits = rp.logits
    assert alone.choose(torch.zeros(4), torch.zeros(4, 4), boxes, 11)[0] == [6, 6, 9, 9]  # the first head alone
    # averaged: 0.4, 0.2, 0.2, 0.2 -> the three agreeing patches' box, confidence their 0.6
    assert rp.choose(torch.zeros(4), torch.zeros(4, 4), boxes, 11) == ([1, 1, 4, 4], pytest.approx(0.6))


def test_with_more_heads_the_training_loss_adds_each_heads_own_loss():
    og = micro_model(region_boxes=True, region_heads=2)
    m = og.model
    spread_boxes(og)
    inputs = batch(og)
    out = m(**inputs)
    lm_loss, hidden, patches, rows, pos, image_of_row, target = _loss_parts_by_hand(m, inputs)
    rp = m.region_pointer
    with torch.no_grad():
        args = (hidden[rows, pos], patches[image_of_row], rp.boxes(patches)[image_of_row], target)
        first, second = rp.loss(*args), rp.more[0].loss(*args)
    assert abs(float(first - second)) > 1e-4  # two heads, two starts
    torch.testing.assert_close(out.loss, lm_loss + first + second, rtol=1e-4, atol=1e-4)
    out.loss.backward()
    assert rp.more[0].query[1].weight.grad.abs().sum() > 0


def test_a_decline_in_words_is_re_asked_and_overruled_only_where_the_pointer_finds_the_thing():
    from transformers import LogitsProcessor, LogitsProcessorList

    from omniground.model.api import DECLINE_OVERRULED_AT, ChatResult

    og = micro_model(region_boxes=True, region_presence=True)
    cfg, pointer = og.model.config, og.model.region_pointer
    with torch.no_grad():  # every patch reads the same box: the score is the patches' share beside "nothing here"
        pointer.box[-1].weight.zero_()
        pointer.box[-1].bias.copy_(torch.tensor([0.2, -0.3, 0.4, 0.1]))
    question = [{"role": "user", "content": "<image>\nWhere is the cat?"}]
    asked_len = og.processor.prepare([question], [[image(0)]], add_generation_prompt=True,
                                     answer_prefixes=["The cat"])[0]["input_ids"].shape[1]

    class BoxFirst(LogitsProcessor):  # the re-asked answer, "The cat", goes on with a box
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] == asked_len:
                scores = torch.full_like(scores, float("-inf"))
                scores[:, cfg.box_token_id] = 0.0
            return scores

    declined = [ChatResult("There is no cat in this image."), ChatResult("No cat is visible."),
                ChatResult("The cat is asleep."), ChatResult("There is no cat in this image.")]
    convs, media = [question] * 4, [[image(0)], [image(0)], [image(0)], [audio()]]
    kw = dict(max_new_tokens=5, logits_processor=LogitsProcessorList([BoxFirst()]))
    with torch.no_grad():
        pointer.absent.weight.zero_()
        pointer.absent.bias.fill_(-20.0)  # "nothing here" weighs nothing: the pointer finds the cat
        found = og.overrule_declines(convs, media, declined, **kw)
        pointer.absent.bias.fill_(20.0)  # "nothing here" weighs all
        kept = og.overrule_declines(convs, media, declined, **kw)
    # both declines of the image re-asked as "The cat" and answered with a pointed box
    for answer, decline in zip(found[:2], declined):
        assert answer.text.startswith("The cat") and len(answer.boxes) == 1 and answer.overruled == decline.text
        assert answer.boxes[0].score >= DECLINE_OVERRULED_AT
    assert found[2:] == declined[2:]  # not a decline; a decline asked of audio
    assert kept == declined  # the re-asked box scored below DECLINE_OVERRULED_AT: the decline stands
    assert og.overrule_declines(convs, media, declined, rows=[2, 3], **kw) == declined  # rows not allowed
    plain = micro_model(region_boxes=True)  # no "nothing here": a box's score says nothing of presence
    assert plain.overrule_declines(convs, media, declined, **kw) == declined


def test_a_grounding_answer_that_writes_no_box_or_span_is_asked_for_it():
    from transformers import LogitsProcessor, LogitsProcessorList

    from omniground.model.api import ChatResult

    og = micro_model(region_boxes=True, span_pointers=True, time_anchored_queries=True)
    markers = [og.model.config.box_token_id, og.model.config.span_token_id]

    class NoMarkerWritten(LogitsProcessor):  # the LM trails off instead of writing its box or span
        def __call__(self, input_ids, scores):
            scores[:, markers] = float("-inf")
            return scores

    on_image = [{"role": "user", "content": "<image>\nWhere is the cat?"}]
    on_audio = [{"role": "user", "content": "<audio>\nAt what time can you hear this: a bell?"}]
    convs, media, starts = [on_image, on_audio], [[image(0)], [audio()]], ["The cat", ""]
    kw = dict(logits_processor=LogitsProcessorList([NoMarkerWritten()]))
    first, located = [], []
    with torch.no_grad():
        for i, length in enumerate((4, 2)):  # as many tokens as a box / a span takes
            one = ([convs[i]], [media[i]])
            first += og.chat_batch(*one, answer_prefixes=[starts[i]], check_declines=False, max_new_tokens=length, **kw)
            located += og.chat_batch(*one, answer_prefixes=[starts[i]], max_new_tokens=length, **kw)
    boxed, spanned = located
    assert not first[0].boxes and first[0].text.startswith("The cat") and not first[1].spans
    # re-asked as "The cat<|box|>" and "<|span|>": the pointers place them, scored as any pointed item
    assert boxed.text.startswith("The cat[") and len(boxed.boxes) == 1 and 0 <= boxed.boxes[0].score <= 1
    assert spanned.text.startswith("{") and len(spanned.spans) == 1 and 0 <= spanned.spans[0].score <= 1
    assert (boxed.overruled, spanned.overruled) == (first[0].text, first[1].text)
    # not a grounding answer (no start given); a grounding answer that placed its box already
    kept = [first[0], ChatResult("The cat[0.1,0.2,0.3,0.4]", [boxed.boxes[0]])]
    with torch.no_grad():
        assert og.location_after_start([on_image] * 2, [[image(0)]] * 2, kept, [None, "The cat"], max_new_tokens=4,
                                       **kw) == kept


def _attention_by_hand(reread, hidden, text, mask):
    """TextReread as multi-head attention is usually written: every text token mapped to a key and a value."""
    (m, length, h), n = text.shape, reread.heads
    q = reread.q(reread.norm_query(hidden)).view(m, n, 1, h // n)
    t = reread.norm_text(text)
    k, v = (proj(t).view(m, length, n, h // n).transpose(1, 2) for proj in (reread.k, reread.v))
    read = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    return hidden + reread.out(read.reshape(m, h))


def test_reread_and_patch_scores_equal_attention_and_a_key_map_that_map_every_token():
    torch.manual_seed(0)
    rp = RegionPointer(vision_dim=8, hidden=16, presence=True, reread=True)
    for p in rp.parameters():  # LayerNorm gains and biases and the zero-started map too: every term counts
        torch.nn.init.normal_(p, std=0.5)
    hidden, patches, text = torch.randn(3, 16), torch.randn(3, 5, 8), torch.randn(3, 6, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]]).bool()  # the last: no text
    read, by_hand = rp.reread(hidden, text, mask), _attention_by_hand(rp.reread, hidden, text, mask)
    assert torch.allclose(read, by_hand, atol=1e-5)
    query = rp.query(by_hand)
    scores = torch.cat([torch.einsum("mh,mph->mp", query, rp.key(patches)) * rp.scale, rp.absent(query)], 1)
    logits = rp.logits(hidden, patches, text, mask)
    assert torch.allclose(logits, scores, atol=1e-5)
    # and the same gradients for every weight that moves the scores
    names, params = zip(*rp.named_parameters())
    grads = torch.autograd.grad(logits.square().sum(), params, allow_unused=True)
    grads_by_hand = torch.autograd.grad(scores.square().sum(), params, allow_unused=True)
    for name, g, g_by_hand in zip(names, grads, grads_by_hand):
        if name.startswith("box.") or name == "reread.k.bias":  # the box regressor scores nothing; softmax is blind
            continue  # to the key bias, which adds the same to every token's score
        assert torch.allclose(g, g_by_hand, atol=1e-4, rtol=1e-4), name


def test_choosing_many_boxes_at_once_chooses_as_one_at_a_time():
    torch.manual_seed(1)
    rp = RegionPointer(vision_dim=8, hidden=16, presence=True, reread=True, heads=3).eval()
    for p in rp.parameters():
        torch.nn.init.normal_(p, std=0.5)
    hidden, patches, text = torch.randn(6, 16), torch.randn(6, 9, 8), torch.randn(6, 4, 16)
    corner, size = torch.rand(6, 9, 2), torch.rand(6, 9, 2)
    boxes = torch.cat([corner, corner + size], -1).clamp(max=1)
    mask = torch.arange(4) < torch.tensor([1, 2, 3, 4, 4, 2])[:, None]
    with torch.no_grad():
        bins, confidences = rp.choose_many(hidden, patches, boxes, 11, text, mask)
        one_by_one = [rp.choose(hidden[i], patches[i], boxes[i], 11, text[i], mask[i]) for i in range(6)]
    assert bins == [b for b, _ in one_by_one]
    assert confidences == pytest.approx([c for _, c in one_by_one], abs=1e-6)
    assert len(set(map(tuple, bins))) > 1  # not one answer for all
