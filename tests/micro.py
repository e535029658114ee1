"""The micro model the model, serving and evaluation tests build (every branch present, each a few layers
wide), and the decoded media and chat turns they feed it."""

import numpy as np
import torch
from PIL import Image

from omniground.media import Audio, VideoFrames, VideoInfo
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


def image(seed=0, w=48, h=32) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def video(n=4, seconds=6.0, seed=0) -> VideoFrames:
    """n random 40x24 frames at the centres of n equal slices of `seconds`."""
    frames = np.random.default_rng(seed).integers(0, 255, (n, 24, 40, 3), dtype=np.uint8)
    return VideoFrames(frames, (np.arange(n) + 0.5) * seconds / n, VideoInfo(seconds, n / seconds, 40, 24, n, False))


def audio(seconds=2.5, seed=0) -> Audio:
    samples = np.random.default_rng(seed).standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1
    return Audio(samples, 16000, seconds)


def turn(user, answer) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def labelled_batch(og, conversations, media):
    """Training-style inputs (labels on the answers, right padding) for `conversations` and their media."""
    inputs, _ = og.processor.prepare(conversations, media, add_generation_prompt=False, return_labels=True,
                                     padding_side="right")
    return inputs
