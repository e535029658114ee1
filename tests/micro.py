"""The micro model the model, serving and evaluation tests build: every branch present, each a few layers wide."""

import torch

from omniground.model import OmniGround, build_model, tiny_config
from omniground.model.tokenizer import build_tiny_tokenizer

MICRO = dict(
    text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    vision=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64),
    audio=dict(num_mel_bins=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               max_source_positions=100),
    num_video_frames=4, video_frame_pool=2, video_num_queries=4, audio_window_seconds=1.0, max_audio_windows=4,
    audio_tokens_per_window=2, audio_num_queries=4, resampler_hidden_size=32, resampler_num_layers=1,
    resampler_num_heads=2,
)


def micro_model(num_location_bins: int = 16, text: dict | None = None, **kw) -> OmniGround:
    """A seeded micro model; `text` updates the LM config (e.g. a peaked `initializer_range`), `kw` the rest."""
    torch.manual_seed(0)
    config = {**MICRO, **kw, "text": {**MICRO["text"], **(text or {})}}
    return build_model(tiny_config(**config), build_tiny_tokenizer(), num_location_bins)
