"""Real Hugging Face backbones, in miniature: `from_backbones` on a Llama + CLIP vision + Whisper built and
saved here (the Vicuna-7B + CLIP ViT-L/14-336 + Whisper recipe, no network), and other LM/vision families."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    WhisperConfig,
    WhisperModel,
)

from omniground.media import Audio, VideoFrames, VideoInfo
from omniground.model import IGNORE_INDEX, OmniGround, build_model, from_backbones, tiny_config
from omniground.model.tokenizer import build_tiny_tokenizer

SMALL_ADAPTERS = dict(num_video_frames=3, video_frame_pool=2, video_num_queries=4, max_audio_windows=3,
                      audio_tokens_per_window=2, audio_num_queries=4, resampler_hidden_size=32,
                      resampler_num_layers=1, resampler_num_heads=2)




@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """Three pretrained-looking checkpoints on disk, as a user's HF cache would hold them."""
    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    tok = build_tiny_tokenizer()
    tok.chat_template = None  # Llama/Vicuna tokenizers ship none: omniground's Vicuna template applies
    tok.add_special_tokens({"bos_token": "<s>"})
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                      max_position_embeddings=512))
    lm.save_pretrained(root / "vicuna"), tok.save_pretrained(root / "vicuna")
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                            num_attention_heads=2, image_size=32, patch_size=8))
    clip.save_pretrained(root / "clip")
    whisper = WhisperModel(WhisperConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                         decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                         num_mel_bins=16, max_source_positions=50, max_target_positions=16,
                                         vocab_size=64, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                         decoder_start_token_id=0))
    whisper.save_pretrained(root / "whisper")
    og = from_backbones(str(root / "vicuna"), str(root / "clip"), str(root / "whisper"), num_location_bins=16,
                        **SMALL_ADAPTERS)
    return root, og, lm, clip, whisper


def media():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8))
    vid = VideoFrames(rng.integers(0, 255, (3, 20, 20, 3), dtype=np.uint8), np.array([0.5, 1.5, 2.5]),
                      VideoInfo(3.0, 1.0, 20, 20, 3, False))
    aud = Audio(rng.standard_normal(16000 * 2).astype(np.float32) * 0.1, 16000, 2.0)
    return img, vid, aud


CONV = [{"role": "user", "content": "<image>\nWhere is the cat? And in <video>, when is <audio>?"},
        {"role": "assistant", "content": "the cat[0.100,0.200,0.500,0.600] at {0.25,0.50}"}]


def test_pretrained_weights_arrive_untouched(backbones):
    _, og, lm, clip, whisper = backbones
    m = og.model
    for name, value in clip.state_dict().items():
        assert torch.equal(m.vision_tower.encoder.state_dict()[name], value), name
    for name, value in whisper.get_encoder().state_dict().items():
        assert torch.equal(m.audio_encoder.encoder.state_dict()[name], value), name
    ours = m.language_model.state_dict()
    for name, value in lm.state_dict().items():
        if "embed_tokens" in name or "lm_head" in name:  # grown by omniground's tokens; old rows kept
            assert torch.equal(ours[name][: value.shape[0]], value), name
        else:
            assert torch.equal(ours[name], value), name
    cfg = m.config
    assert cfg.vision_config.model_type == "clip_vision_model" and cfg.audio_config.model_type == "whisper"
    assert cfg.audio_window_seconds == 1.0 and not cfg.train_encoders


def test_vicuna_template_and_clip_penultimate_layer(backbones):
    _, og, _, clip, _ = backbones
    ex = og.processor.encode(CONV, list(media()), add_generation_prompt=False, with_labels=True)
    text = og.tokenizer.decode(ex.input_ids)
    assert text.startswith("<s>A chat between") and " USER: " in text and " ASSISTANT: " in text
    kept = og.tokenizer.decode([t for t, l in zip(ex.input_ids, ex.labels) if l != IGNORE_INDEX])
    assert kept.startswith(" the cat<|box|>") and kept.endswith("<|span|><loc_4><loc_8><|im_end|>")
    pixels = torch.from_numpy(og.processor.image_tensor(media()[0]))[None]
    with torch.no_grad():
        ours = og.model.vision_tower(pixels)  # (1, 16, 32): CLS dropped
        ref = clip(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
    assert ours.shape == (1, 16, 32) and torch.equal(ours, ref)


def test_stage_one_trains_adapters_not_the_pretrained_towers(backbones):
    _, og, _, _, _ = backbones
    m = og.model
    inputs, _ = og.processor.prepare([CONV], [list(media())], add_generation_prompt=False, return_labels=True)
    m.set_stage(1)
    m.zero_grad(set_to_none=True)
    m(**inputs).loss.backward()
    for name, p in m.named_parameters():
        touched = p.grad is not None and bool(p.grad.abs().sum() > 0)
        expected = name.startswith(("image_projector", "video_resampler", "audio_resampler")) or (
            "embed_tokens" in name or "lm_head" in name)
        assert touched == expected, name


def test_backbone_model_saves_loads_and_generates(backbones, tmp_path):
    _, og, _, _, _ = backbones
    og.model.eval()
    inputs, _ = og.processor.prepare([CONV[:1]], [list(media())])
    with torch.no_grad():
        before = og.model(**inputs).logits
    og.save_pretrained(tmp_path)
    loaded = OmniGround.from_pretrained(tmp_path)
    with torch.no_grad():
        after = loaded.model(**inputs).logits
    assert torch.equal(before, after)
    result = loaded.chat(CONV[:1], list(media()), max_new_tokens=4, min_new_tokens=4)
    assert result.num_tokens == 4


@pytest.mark.parametrize("text_type,vision_type", [("qwen2", "siglip_vision_model"), ("llama", "clip_vision_model")])
def test_other_families_from_config(text_type, vision_type):
    text = dict(model_type=text_type, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2)
    vision = dict(model_type=vision_type, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=32, patch_size=8)
    cfg = tiny_config(text=text, vision=vision, audio=dict(num_mel_bins=16, hidden_size=32, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=64, max_source_positions=100),
                      audio_window_seconds=1.0, **SMALL_ADAPTERS)
    og = build_model(cfg, build_tiny_tokenizer(), num_location_bins=0)
    assert type(og.model.language_model).__name__.lower().startswith(text_type)
    inputs, _ = og.processor.prepare([CONV], [list(media())], add_generation_prompt=False, return_labels=True)
    assert "[0.100,0.320,0.500,0.560]" in og.tokenizer.decode(inputs["input_ids"][0])  # digits, padded-square frame
    og.model.set_stage(2)
    out = og.model(**inputs)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert og.model.vision_tower.encoder.__class__.__name__.lower().startswith(vision_type.split("_")[0])
    assert all(p.grad is not None for p in og.model.language_model.parameters())


def test_a_missing_backbone_is_a_one_line_user_error(tmp_path):
    from omniground.errors import UserError

    with pytest.raises(UserError, match="could not load a backbone") as e:
        from_backbones(str(tmp_path / "no-such-llm"))
    assert "\n" not in str(e.value)
