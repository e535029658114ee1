"""`location_pointer`: `<loc_k>` tokens tied to the image's patch columns/rows (micro configs, seconds)."""

import pytest
import torch
from micro import image, labelled_batch, micro_model, turn

from omniground.model import OmniGround
from omniground.model.modeling_omniground import LocationPointer, bin_interpolation, first_item_per_row

CONVS = [turn("<image>\nWhere is the cat?", "the cat[0.100,0.200,0.500,0.600]"),
         turn("Say hi.", "hi"),
         turn("<image>\nWhere is the dog?", "the dog[0.300,0.100,0.900,0.700]")]
MEDIA = [[image(0)], None, [image(1)]]


def batch(og):
    return labelled_batch(og, CONVS, MEDIA)


def randomise(pointer: LocationPointer, seed=1, only=None):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in only or ("out_x", "out_y", "in_x", "in_y"):
            w = getattr(pointer, name)
            w.copy_(torch.randn(w.shape, generator=g) * 0.3)


@pytest.fixture(scope="module")
def models():
    return micro_model(), micro_model(location_pointer=True)


def test_flag_off_by_default_and_adds_nothing(models):
    plain, pointed = models
    assert plain.model.config.location_pointer is False and plain.model.location_pointer is None
    assert not any("location_pointer" in k for k in plain.model.state_dict())
    extra = set(pointed.model.state_dict()) - set(plain.model.state_dict())
    assert extra and all(k.startswith("location_pointer.") for k in extra)


def test_fresh_pointer_computes_what_the_plain_model_does(models):
    plain, pointed = models
    inputs = batch(plain)
    with torch.no_grad():
        a, b = plain.model(**inputs), pointed.model(**inputs)
    assert a.logits.shape == b.logits.shape == (*inputs["input_ids"].shape, len(plain.tokenizer))
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-4, atol=1e-4)


def test_pointer_logits_touch_only_location_columns_and_depend_on_the_image():
    og = micro_model(location_pointer=True)
    cfg, m = og.model.config, og.model
    inputs = batch(og)
    with torch.no_grad():
        before = m(**inputs).logits
        randomise(m.location_pointer, only=("out_x", "out_y"))
        after = m(**inputs).logits
        other = dict(inputs, pixel_values=inputs["pixel_values"].flip(-1))  # the images mirrored
        mirrored = m(**other).logits
    loc = slice(cfg.loc_token_start_id, cfg.loc_token_start_id + cfg.num_location_bins)
    diff = (after - before).abs()
    assert diff[..., loc].amax() > 1e-3
    outside = torch.cat([diff[..., : loc.start], diff[..., loc.stop :]], -1)  # the loc rows may end the vocab
    assert outside.amax() < 1e-5
    assert diff[1, ..., loc].amax() < 1e-5  # the row without an image gets no pointer term
    assert (mirrored - after)[..., loc].abs().amax() > 1e-3


def test_gradients_reach_the_pointer_and_the_vision_tower():
    og = micro_model(location_pointer=True)
    m = og.model
    m.set_stage(1)
    assert all(p.requires_grad for p in m.location_pointer.parameters())
    m.set_stage(2)
    randomise(m.location_pointer)
    m(**batch(og)).loss.backward()
    for name in ("out_x", "out_y", "in_x", "in_y"):
        assert getattr(m.location_pointer, name).grad.abs().sum() > 0, name
    assert m.vision_tower.encoder.patch_embed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cache_name", ["past_key_values", "cache"])
def test_cached_decoding_keeps_the_image_features(cache_name):
    """A location token decoded after the prefill (media dropped) scores as in one full forward, whichever
    name the cache comes under (transformers' generate() renamed it `cache`)."""
    og = micro_model(location_pointer=True)
    m, cfg = og.model, og.model.config
    randomise(m.location_pointer)
    m.eval()
    inputs, _ = og.processor.prepare([{"role": "user", "content": "<image>\nWhere?"}], [image(2)])
    ids = inputs["input_ids"]
    nxt = torch.tensor([[cfg.box_token_id, cfg.loc_token_start_id + 3]])
    with torch.no_grad():
        full = m(input_ids=torch.cat([ids, nxt], 1), pixel_values=inputs["pixel_values"],
                 attention_mask=torch.ones(1, ids.shape[1] + 2, dtype=torch.long)).logits[:, -2:]
        pre = m(**inputs, use_cache=True)
        step = m(input_ids=nxt, **{cache_name: pre.past_key_values}, use_cache=True,
                 attention_mask=torch.ones(1, ids.shape[1] + 2, dtype=torch.long)).logits
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)


def test_generation_runs_and_save_load_round_trip(tmp_path):
    og = micro_model(location_pointer=True)
    randomise(og.model.location_pointer)
    og.model.eval()
    conv = [{"role": "user", "content": "<image>\nWhere is the cat?"}]
    first = og.chat(conv, [image(3)], max_new_tokens=8)
    og.save_pretrained(tmp_path)
    back = OmniGround.from_pretrained(tmp_path)
    assert back.model.config.location_pointer is True
    for name in ("out_x", "in_y"):
        torch.testing.assert_close(getattr(back.model.location_pointer, name), getattr(og.model.location_pointer, name))
    inputs = batch(og)
    with torch.no_grad():
        torch.testing.assert_close(back.model(**inputs).logits, og.model(**inputs).logits)
    assert back.chat(conv, [image(3)], max_new_tokens=8).text == first.text


def test_helpers():
    m = bin_interpolation(5, 4)  # coordinates 0, .25, .5, .75, 1 over 4 patch centres .125 .. .875
    torch.testing.assert_close(m.sum(1), torch.ones(5))
    assert m[0, 0] == 1 and m[-1, -1] == 1 and m[2, 1] == m[2, 2] == 0.5
    ids = torch.tensor([[7, 7, 1], [1, 1, 1], [7, 7, 7]])  # 7 = image pad, 2 per image
    assert first_item_per_row(ids, 7, 2).tolist() == [0, -1, 1]


def test_pointer_needs_location_bins():
    with pytest.raises(ValueError, match="num_location_bins"):
        micro_model(num_location_bins=0, location_pointer=True)
