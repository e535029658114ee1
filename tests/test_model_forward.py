"""The model's training side on micro configs: forward + backward per modality, loss masked on the
prompt, what trains at each stage, save -> load round trip, and Sample -> training example -> batch."""


import numpy as np
import pytest
import torch
from media_files import write_video, write_wav
from micro import MICRO, audio, image, micro_model, turn, video
from PIL import Image

from omniground.data.schema import Sample
from omniground.grounding import parse
from omniground.model import IGNORE_INDEX, OmniGround


@pytest.fixture(scope="module")
def og():
    return micro_model()


BATCHES = {
    "image": ([turn("<image>\nWhere is the cat?", "the cat[0.100,0.200,0.500,0.600]")], [[image()]]),
    "video": ([turn("<video>\nWhen does it jump?", "it jumps {0.25,0.50}")], [[video()]]),
    "audio": ([turn("<audio>\nWhen is the bell?", "the bell {0.10,0.40}")], [[audio()]]),
    "mixed": (
        [turn("<image>\nWhere is the cat?", "the cat[0.100,0.200,0.500,0.600]"),
         turn("<video>\nand <audio>\nwhen?", "then {0.20,0.30}"),
         turn("Say hi.", "hi")],
        [[image()], [video(n=3), audio(seconds=4.5)], None],
    ),
    "text": ([turn("Say hi.", "hi there")], [None]),
}
ADAPTER_OF = {"image": "image_projector", "video": "video_resampler", "audio": "audio_resampler"}


def grad_norm(module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("kind", list(BATCHES))
def test_forward_backward_reaches_exactly_the_adapters_used(og, kind):
    convs, media = BATCHES[kind]
    inputs, _ = og.processor.prepare(convs, media, add_generation_prompt=False, return_labels=True,
                                     padding_side="right")
    og.model.set_stage(1)
    og.model.zero_grad(set_to_none=True)
    out = og.model(**inputs)
    assert out.logits.shape[:2] == inputs["input_ids"].shape
    assert torch.isfinite(out.loss)
    out.loss.backward()
    used = {m for m in ("image", "video", "audio") if m == kind or (kind == "mixed")}
    for modality, adapter in ADAPTER_OF.items():
        g = grad_norm(getattr(og.model, adapter))
        assert (g > 0) == (modality in used), (modality, g)


def test_labels_keep_only_assistant_turns(og):
    conv = [{"role": "system", "content": "Be brief."},
            *turn("<image>\nWhere is the cat?", "the cat[0.100,0.200,0.500,0.600]"),
            *turn("And the dog?", "no dog")]
    ex = og.processor.encode(conv, [image(w=32, h=32)], add_generation_prompt=False, with_labels=True)
    ids, labels = torch.tensor(ex.input_ids), torch.tensor(ex.labels)
    kept = og.tokenizer.decode(ids[labels != IGNORE_INDEX])
    # square image: the box's model frame is the box itself; 16 bins -> round(v * 15)
    assert kept == "the cat<|box|><loc_2><loc_3><loc_8><loc_9><|im_end|>no dog<|im_end|>"
    assert og.model.config.image_token_id in ex.input_ids and og.model.config.image_token_id not in ex.labels
    # the loss is the LM's next-token loss over those positions only
    inputs = og.processor.collate([ex])
    with torch.no_grad():
        out = og.model(**inputs)
    logits, target = out.logits[0, :-1], inputs["labels"][0, 1:]
    manual = torch.nn.functional.cross_entropy(logits[target != IGNORE_INDEX], target[target != IGNORE_INDEX])
    assert torch.allclose(out.loss, manual, atol=1e-5)


def test_stage_one_trains_adapters_and_new_token_rows_only():
    og = micro_model()
    m = og.model
    m.config.train_encoders = False  # as with pretrained encoders
    m.set_stage(1)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert all(n.startswith(("image_projector", "video_resampler", "audio_resampler")) or "embed" in n
               or "lm_head" in n for n in trainable)
    assert not any(n.startswith(("vision_tower", "audio_encoder")) for n in trainable)
    assert not any(".layers." in n for n in trainable if n.startswith("language_model"))
    inputs, _ = og.processor.prepare(*BATCHES["image"], add_generation_prompt=False, return_labels=True)
    m(**inputs).loss.backward()
    emb = m.get_input_embeddings().weight.grad
    start = m.config.new_token_start_id
    assert emb[:start].abs().sum() == 0 and emb[start:].abs().sum() > 0
    assert all(p.grad is None for n, p in m.named_parameters() if not p.requires_grad)
    # the optimizer groups keep decay off the (partly frozen) embeddings
    groups = m.parameter_groups(weight_decay=0.1)
    assert any(p is m.get_input_embeddings().weight for p in groups[1]["params"])
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in m.parameters() if p.requires_grad}


def test_stage_two_full_and_lora():
    from peft import LoraConfig

    og = micro_model()
    m = og.model
    m.set_stage(2)
    assert all(p.requires_grad for p in m.language_model.parameters())
    with pytest.raises(ValueError, match="stage 1"):
        m.set_stage(1, lora=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    m.set_stage(3, lora=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    lm_trainable = [n for n, p in m.language_model.named_parameters() if p.requires_grad]
    assert lm_trainable and all("lora_" in n or "embed" in n or "lm_head" in n for n in lm_trainable)
    inputs, _ = og.processor.prepare(*BATCHES["audio"], add_generation_prompt=False, return_labels=True)
    m(**inputs).loss.backward()
    assert all(p.grad is not None for n, p in m.language_model.named_parameters() if "lora_B" in n)
    # merging folds LoRA into plain weights: same function, no lora_ keys left to save
    with torch.no_grad():
        for n, p in m.language_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
        m.eval()
        before = m(**inputs).logits
        m.merge_lora()
        after = m(**inputs).logits
    assert not any("lora_" in k for k in m.state_dict())
    assert torch.allclose(before, after, atol=1e-4)


def test_save_load_round_trip_gives_identical_logits(og, tmp_path):
    convs, media = BATCHES["mixed"]
    inputs, _ = og.processor.prepare(convs, media, add_generation_prompt=False)
    og.model.eval()
    with torch.no_grad():
        before = og.model(**inputs).logits
    og.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = OmniGround.from_pretrained(tmp_path)
    again, _ = loaded.processor.prepare(convs, media, add_generation_prompt=False)
    assert torch.equal(again["input_ids"], inputs["input_ids"])
    with torch.no_grad():
        after = loaded.model(**again).logits
    assert torch.equal(before, after)
    assert loaded.model.config.num_location_bins == 16
    assert loaded.model.config.image_token_id == og.model.config.image_token_id


def test_location_embeddings_start_ordered(og):
    cfg = og.model.config
    rows = og.model.get_input_embeddings().weight[cfg.loc_token_start_id : cfg.loc_token_start_id + 16]
    sim = torch.nn.functional.cosine_similarity(rows[0:1], rows, dim=-1)  # (16,)
    assert sim[1] > sim[8] > sim[15] - 0.2 and sim[1] > 0.9


def test_box_goes_through_the_padded_square_and_back(og):
    wide = (120, 60)  # padded to 120x120: y is squeezed into [0.25, 0.75]; 16 bins -> round(v * 15)
    text = og.processor.to_model_text("the cat[0.100,0.200,0.500,0.600] at {0.20,0.40}", wide, duration=10.0)
    assert text == "the cat<|box|><loc_2><loc_5><loc_8><loc_8> at <|span|><loc_3><loc_6>"
    meta = og.processor.encode([{"role": "user", "content": "<image>"}], [image(w=wide[0], h=wide[1])]).meta
    answer = og.processor.post_process_grounding(og.processor.render_location_tokens(text), meta)
    (box,) = answer.boxes
    half_bin = 0.5 / 15
    assert np.allclose(box.xyxy, (0.1, 0.2, 0.5, 0.6), atol=half_bin / 0.5)  # y bins are twice as coarse
    assert answer.boxes_pixels[0] == pytest.approx(box.to_pixels(*wide))
    assert parse(answer.text).boxes[0].xyxy == pytest.approx(box.xyxy, abs=1e-3)  # user text in the image's frame


def test_centred_image_tokens_keep_only_what_differs_within_the_image():
    """center_image_tokens: each image's tokens lose their mean (no constant prefix); off = the plain tokens."""
    pixels = torch.randn(2, 3, 32, 32)
    plain, centred = micro_model(), micro_model(center_image_tokens=True)
    assert plain.model.config.center_image_tokens is False
    with torch.no_grad():
        a, b = plain.model.encode_images(pixels), centred.model.encode_images(pixels)
    assert a.mean(1).abs().amax() > 1e-3  # the plain tokens have a common part (at init a small one)
    torch.testing.assert_close(b.mean(1), torch.zeros_like(b.mean(1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(b, a - a.mean(1, keepdim=True))  # same weights (same seed), only centred


def test_video_features_depend_on_when_frames_were_taken(og):
    """Timestamp-aware: the same frames at other times (or in a longer clip) give other tokens."""
    v = video(n=4, seconds=6.0)
    frames = torch.from_numpy(np.stack([og.processor.image_tensor(f) for f in v.frames]))[None]  # (1, 4, 3, S, S)
    mask = torch.ones(1, 4, dtype=torch.bool)
    with torch.no_grad():
        encode = og.model.encode_videos
        a = encode(frames, mask, torch.tensor([[0.5, 1.5, 2.5, 3.5]]), torch.tensor([6.0]))
        b = encode(frames, mask, torch.tensor([[0.5, 1.5, 2.5, 3.5]]), torch.tensor([6.0]))
        later = encode(frames, mask, torch.tensor([[2.5, 3.5, 4.5, 5.5]]), torch.tensor([6.0]))
        longer = encode(frames, mask, torch.tensor([[0.5, 1.5, 2.5, 3.5]]), torch.tensor([60.0]))
    assert torch.equal(a, b)
    assert (a - later).abs().max() > 1e-3 and (a - longer).abs().max() > 1e-3


def test_audio_windows_cover_the_whole_clip(og):
    long = audio(seconds=40.0)  # window 1 s, at most 4 windows: spread from start to end
    feats, starts, duration = og.processor.audio_arrays(long)
    assert feats.shape == (4, 16, 100) and duration == pytest.approx(40.0)
    assert starts[0] == 0 and starts[-1] + 1.0 == pytest.approx(40.0, abs=0.01)
    short = audio(seconds=2.5)  # shorter than max windows x window: back to back, the last one padded
    feats, starts, _ = og.processor.audio_arrays(short)
    assert starts.tolist() == [0.0, 1.0, 2.0]


def _write_media(root):
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 80, 3), dtype=np.uint8)).save(root / "wide.png")
    levels = 30 * np.arange(8, dtype=np.uint8)  # 8 frames at 4 fps: 2 s
    write_video(root / "clip.mp4", np.broadcast_to(levels[:, None, None, None], (8, 32, 32, 3)), 4, codec="libx264")
    write_wav(root / "beep.wav", (np.sin(np.arange(16000 * 3) / 5) * 8000).astype(np.int16))


def test_training_examples_from_schema_samples_and_their_batch(og, tmp_path):
    _write_media(tmp_path)
    rec = Sample(
        id="rec", media=[{"type": "image", "path": "wide.png", "width": 80, "height": 40}],
        conversation=[{"role": "user", "content": "<image>\nWhere is the cat?"},
                      {"role": "assistant", "content": "the cat[0.100,0.200,0.500,0.600]"}],
        boxes=[{"phrase": "the cat", "box": [0.1, 0.2, 0.5, 0.6]}], task="rec", stage=2, source="test",
        license="CC0-1.0")
    vid = Sample(
        id="vid", media=[{"type": "video", "path": "clip.mp4", "duration": 2.0},
                         {"type": "audio", "path": "beep.wav", "duration": 3.0}],
        conversation=[{"role": "user", "content": "<video>\nWhen does it brighten? <audio>"},
                      {"role": "assistant", "content": "it brightens {1.0,2.0}"}],
        spans=[{"phrase": "it brightens", "start": 1.0, "end": 2.0}], task="video_grounding", stage=2,
        source="test", license="CC0-1.0")
    examples = [og.processor.build_training_example(s, tmp_path) for s in (rec, vid)]
    decoded = [og.tokenizer.decode([t for t, l in zip(e.input_ids, e.labels) if l != IGNORE_INDEX]) for e in examples]
    # wide image padded to 80x80: y 0.2 -> 0.35 -> bin round(5.25) = 5; spans in seconds -> fractions
    assert decoded == ["the cat<|box|><loc_2><loc_5><loc_8><loc_8><|im_end|>",
                       "it brightens <|span|><loc_8><loc_15><|im_end|>"]
    batch = og.processor.collate(examples, padding_side="right")
    longest = max(len(e.input_ids) for e in examples)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, longest)
    short = int(np.argmin([len(e.input_ids) for e in examples]))
    n = len(examples[short].input_ids)
    assert batch["attention_mask"][short, n:].sum() == 0 and (batch["labels"][short, n:] == IGNORE_INDEX).all()
    assert batch["pixel_values"].shape == (1, 3, 32, 32)
    assert batch["video_pixel_values"].shape == (1, 4, 3, 32, 32)
    assert batch["video_timestamps"][0].tolist() == pytest.approx([0.25, 0.75, 1.25, 1.75], abs=0.13)
    assert batch["audio_features"].shape == (1, 3, 16, 100) and batch["audio_durations"].tolist() == [3.0]
    og.model.set_stage(1)
    loss = og.model(**batch).loss
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="cut through media"):
        og.processor.build_training_example(rec, tmp_path, max_length=5)
    cut = og.processor.build_training_example(rec, tmp_path, max_length=len(examples[0].input_ids) - 2)
    assert len(cut.input_ids) == len(cut.labels) == len(examples[0].input_ids) - 2


def test_half_precision_runs_every_branch(og, tmp_path):
    """bf16 (what a 7B model is loaded in): media tensors are cast to each encoder's dtype on the way in."""
    og.save_pretrained(tmp_path)
    half = OmniGround.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert half.model.dtype == torch.bfloat16
    convs, media = BATCHES["mixed"]
    inputs, _ = half.processor.prepare(convs, media, add_generation_prompt=False, return_labels=True)
    with torch.no_grad():
        out = half.model(**inputs)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    result = half.chat(convs[1][:1], media[1], max_new_tokens=3, min_new_tokens=3)
    assert result.num_tokens == 3


def test_time_anchored_queries_read_their_own_stretch_of_time_and_lose_the_items_mean():
    from omniground.model.modeling_omniground import MediaResampler

    torch.manual_seed(0)
    res = MediaResampler(8, 16, 12, num_queries=4, num_layers=1, num_heads=2, time_anchored=True).eval()
    steps = torch.randn(1, 4, 3, 8)  # 4 frames of 3 tokens
    mask = torch.ones(1, 4, dtype=torch.bool)
    seconds, duration = torch.tensor([[0.5, 1.5, 2.5, 3.5]]), torch.tensor([4.0])
    with torch.no_grad():
        out = res(steps, mask, seconds, duration)
        later = steps.clone()
        later[:, 3] = torch.randn(1, 3, 8)  # only the last frame changes
        moved = (res(later, mask, seconds, duration) - out).norm(dim=-1)[0]  # (Q,)
    assert out.shape == (1, 4, 12)
    torch.testing.assert_close(out.mean(1), torch.zeros(1, 12), atol=1e-5, rtol=0)  # each item's mean removed
    # the last query reads the last frame most (free queries: all within 10% of each other, measured);
    # the first still moves by the shift of the item's mean
    assert int(moved.argmax()) == 3 and moved[3] > 1.3 * moved[0]

    # padding: an item alone == the same item in a batch with a longer one; padded steps are never read
    longer = torch.randn(1, 6, 3, 8)
    batch = torch.cat([torch.cat([steps, torch.randn(1, 2, 3, 8)], 1), longer])
    bmask = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6], dtype=torch.bool)
    bsec = torch.tensor([[0.5, 1.5, 2.5, 3.5, 0, 0], [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]])
    with torch.no_grad():
        both = res(batch, bmask, bsec, torch.tensor([4.0, 6.0]))
    torch.testing.assert_close(both[:1], out, atol=1e-5, rtol=1e-4)

    # audio windows last step_seconds: their tokens sit inside the window, not at its start
    bias = res.time_bias(torch.tensor([[0.0, 2.0]]), torch.tensor([4.0]), 2, 2.0, torch.zeros(1, 4, dtype=torch.bool))
    assert bias.shape == (2, 4, 4)  # (N * heads, Q, S*T)
    assert bias[0].argmax(0).tolist() == [0, 1, 2, 3]  # tokens at 0.5, 1.5, 2.5, 3.5 s: one per query slot


def test_a_time_anchored_model_runs_forward_and_backward():
    torch.manual_seed(0)
    og = micro_model(time_anchored_queries=True)
    batch = og.processor.prepare(
        [turn("<video>\nWhen?", "At {0.2,0.4}."), turn("<audio>\nWhen?", "At {0.1,0.3}.")],
        [[video()], [audio()]], add_generation_prompt=False, return_labels=True, padding_side="right")[0]
    out = og.model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert og.model.video_resampler.queries.grad is not None and og.model.audio_resampler.queries.grad is not None


def test_conv_stem_keeps_the_patch_grid_round_trips_and_needs_a_power_of_two_patch(og, tmp_path):
    from omniground.model.modeling_omniground import OmniGroundViTConfig, SmallViT

    plain, conv = og, micro_model(vision={**MICRO["vision"], "conv_stem": True})
    assert isinstance(plain.model.vision_tower.encoder.patch_embed, torch.nn.Conv2d)
    stem = conv.model.vision_tower.encoder.patch_embed
    assert sum(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in stem) == 3  # 8 px patches
    convs, media = BATCHES["image"]
    inputs, _ = conv.processor.prepare(convs, media, add_generation_prompt=False)
    conv.model.eval()
    with torch.no_grad():
        patches = conv.model.encode_images(inputs["pixel_values"])
        assert patches.shape == plain.model.encode_images(inputs["pixel_values"]).shape
    conv.save_pretrained(tmp_path)
    loaded = OmniGround.from_pretrained(tmp_path)
    assert loaded.model.config.vision_config.conv_stem is True
    with torch.no_grad():
        assert torch.equal(loaded.model.encode_images(inputs["pixel_values"]), patches)
    with pytest.raises(ValueError, match="power-of-two"):
        SmallViT(OmniGroundViTConfig(**{**MICRO["vision"], "image_size": 36, "patch_size": 6, "conv_stem": True}))
