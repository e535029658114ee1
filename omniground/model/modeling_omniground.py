"""OmniGround: media encoders -> adapters -> any causal LM, as one Hugging Face model.

Read top to bottom: configs, encoders, time embedding + resampler (the adapters of the temporal
branches), the multimodal merge, the model. The processor (`processing_omniground.py`) owns all
preprocessing; this file owns none.

How media reach the LM (the modern HF way, cf. modeling_llava.py): the processor expands each
`<image>` / `<video>` / `<audio>` placeholder into K copies of that modality's pad token (K = the
number of adapter output tokens), the model embeds the text and writes the adapter outputs over
those positions with `masked_scatter`. Batching and padding need no special care, and the encoders
run only in the prefill step of generation (`prepare_inputs_for_generation` drops media once the
KV cache holds the prompt) -- the original re-ran its video/audio encoders for every token.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec
from transformers.modeling_outputs import CausalLMOutputWithPast

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
TIMED_MEDIA = ("video", "audio")  # the kinds of clip a span is on

# transformers 5.24 renamed the KV cache `past_key_values` -> `cache` (in outputs and forward arguments);
# omniground runs on both sides of the rename.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@functools.cache
def cache_kwarg(lm_class: type) -> str:
    """The name `lm_class.forward` takes the KV cache under (see CACHE_FIELD); read once per class, as the
    forward pass runs for every generated token."""
    return "cache" if "cache" in inspect.signature(lm_class.forward).parameters else "past_key_values"


# Every model input that carries media; dropped after the prefill step of cached generation.
MEDIA_INPUT_NAMES = (
    "pixel_values",
    "video_pixel_values",
    "video_frame_mask",
    "video_timestamps",
    "video_durations",
    "audio_features",
    "audio_window_mask",
    "audio_starts",
    "audio_durations",
)


# =================================================================================================
# Configs
# =================================================================================================


class OmniGroundViTConfig(PreTrainedConfig):
    """A small ViT trained from scratch: the image/frame encoder of the embedded default model."""

    model_type = "omniground_vit"
    image_size: int = 64
    patch_size: int = 8
    num_channels: int = 3
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 512
    conv_stem: bool = False  # patchify with stride-2 3x3 convolutions instead of one linear projection


class OmniGroundAudioEncoderConfig(PreTrainedConfig):
    """A small log-mel conv + transformer audio encoder trained from scratch (Whisper-shaped, no weights)."""

    model_type = "omniground_audio_encoder"
    num_mel_bins: int = 64
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 512
    max_source_positions: int = 1500  # frames after the stride-2 conv


class OmniGroundConfig(PreTrainedConfig):
    r"""Everything that defines an OmniGround model and its preprocessing.

    Sub-configs: `text_config` (any `AutoModelForCausalLM` config: llama, qwen2, ...), `vision_config`
    (`clip_vision_model`, `siglip_vision_model` or `omniground_vit`) and `audio_config` (`whisper` or
    `omniground_audio_encoder`). The video branch reuses the vision encoder for its frames.

    Token ids (`image_token_id` ...) are filled in by `add_omniground_tokens` when the tokenizer is
    extended; `num_location_bins > 0` switches the processor to `<loc_k>` location tokens (0 = boxes and
    spans written as plain digits like the original).
    """

    model_type = "omniground"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="omniground_vit"),
        "audio_config": SubConfigSpec(config_class=AutoConfig, model_type="omniground_audio_encoder"),
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None

    # image branch
    aspect_mode: str = "pad"  # "pad": pad to a centred square (boxes in that frame) | "resize": stretch
    image_mean: list | None = None  # defaults to CLIP's
    image_std: list | None = None
    vision_feature_layer: int = -2  # HF towers: penultimate layer, as LLaVA / the original
    image_pool: int = 1  # average-pool stride over the patch grid before the MLP adapter
    # Subtract each image's mean adapter token: a from-scratch model otherwise learns one large constant
    # image prefix that drowns what differs between images (measured: configs/omniground-tiny/README.md).
    center_image_tokens: bool = False
    # video branch
    num_video_frames: int = 8
    video_frame_pool: int = 2  # pool stride over each frame's patch grid before the resampler
    video_num_queries: int = 32
    # audio branch
    audio_sample_rate: int = 16000
    audio_window_seconds: float = 2.0
    max_audio_windows: int = 32  # longer clips: windows spread over the whole clip (hop > window)
    audio_tokens_per_window: int = 4
    audio_num_queries: int = 16
    # resamplers (video and audio)
    resampler_hidden_size: int = 256
    resampler_num_layers: int = 2
    resampler_num_heads: int = 4
    # Query i of a resampler reads mostly its own stretch of the clip (a Gaussian bias on its attention
    # around (i + 0.5) / num_queries of the duration) and each item's output tokens lose their mean:
    # free queries collapsed to one media-independent output (configs/omniground-tiny/README.md).
    time_anchored_queries: bool = False
    # tokens (set by add_omniground_tokens)
    image_token_id: int = -1
    video_token_id: int = -1
    audio_token_id: int = -1
    box_token_id: int = -1
    span_token_id: int = -1
    loc_token_start_id: int = -1
    num_location_bins: int = 0
    # `<loc_k>` tokens point into the image (Kosmos-2/pointer style): their LM-head logits and input
    # embeddings get a term computed from the patch-grid column (x) / row (y) at bin k. See LocationPointer.
    location_pointer: bool = False
    # A box on the image is a pointer at one of its patches, whose box a regressor (trained in stage 0)
    # reads off (Groma-style regions): the LM picks a patch instead of writing four coordinates, and the
    # `<loc_k>` tokens it emits are that patch's box. See RegionPointer.
    region_boxes: bool = False
    # The region pointer also weighs "nothing here" beside the patches (fitted in the pointer refit on
    # phrases the image lacks): a box's score is then the probability that it is there at all and right.
    region_presence: bool = False
    # The region pointer's query also re-reads the text before the box (attention over the LM's hidden states
    # of its text tokens): at the box the last state alone tells which object a phrase names only in part.
    region_reread: bool = False
    # How many region pointer heads (query, key, presence, reread; one box regressor) answer together, their
    # probabilities averaged: fitted apart from different starts (the pointer refit), they err apart.
    region_heads: int = 1
    # The region pointer also reads the image mirrored left to right, with the text's left and right swapped
    # (`OmniGround.chat_batch` runs that view, `region_view`), and each box is chosen from both views'
    # probabilities averaged -- test-time augmentation: two views of one scene err apart, as two heads do.
    # The words swapped are English ones (`MIRRORED_WORDS`): for prompts in another language, leave it off.
    region_mirror: bool = False
    # A span on a clip is two pointers at its time slots (the time-anchored resampler's output tokens), where
    # it starts and where it ends; the `<loc_k>` tokens written are those slots' times. See SpanPointer.
    span_pointers: bool = False
    # The span pointer's query also re-reads the text before the span, as `region_reread` does for boxes, on
    # clips of the kinds listed ("audio", "video"; true: both). On omniground-tiny, audio spans gained and
    # video ones lost, so it reads there on audio clips only (configs/omniground-tiny/README.md).
    span_reread: bool | list = False
    # The span pointer's key reads the slots of clips of the kinds listed through an MLP, not one linear map
    # (true: both): on omniground-tiny one map got video spans right as seldom in training as held out; with
    # the MLP video gained and audio over-fitted, so there it is on video clips only.
    span_key_mlp: bool | list = False
    # How many span pointer heads (query, key, slot edges, reread, key MLP) answer together, the pairs'
    # probabilities averaged: fitted apart (the pointer refit), as `region_heads`. omniground-tiny has one
    # (three: audio spans up 0.5-2 points, video down 2-5).
    span_heads: int = 1
    new_token_start_id: int = -1  # first id added by omniground: these rows of the embeddings always train
    # training
    train_encoders: bool = False  # True only for the from-scratch encoders of the tiny default
    grounding_prompts: dict | None = None  # modality -> prompt with "{phrase}"; None = processor defaults
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.image_mean is None:
            self.image_mean = list(CLIP_MEAN)
        if self.image_std is None:
            self.image_std = list(CLIP_STD)
        if self.text_config.tie_word_embeddings:
            self.tie_word_embeddings = True
        for name in ("span_reread", "span_key_mlp"):  # kinds of clip; true: both
            kinds = getattr(self, name)
            kinds = (list(TIMED_MEDIA) if kinds else []) if isinstance(kinds, bool) else list(kinds)
            if unknown := set(kinds) - set(TIMED_MEDIA):
                raise ValueError(f"{name}: {sorted(unknown)} are no media with time "
                                 f"(those are {', '.join(TIMED_MEDIA)})")
            setattr(self, name, kinds)

    # ---- derived sizes, shared by the model and the processor ----
    @property
    def image_size(self) -> int:
        return int(self.vision_config.image_size)

    @property
    def patch_grid(self) -> int:
        return self.image_size // int(self.vision_config.patch_size)

    @property
    def num_image_tokens(self) -> int:
        return (self.patch_grid // self.image_pool) ** 2

    @property
    def num_frame_tokens(self) -> int:
        return (self.patch_grid // self.video_frame_pool) ** 2

    @property
    def num_mel_bins(self) -> int:
        return int(self.audio_config.num_mel_bins)

    @property
    def audio_frames_per_window(self) -> int:
        return int(round(self.audio_window_seconds * 100))  # 10 ms hop

    def media_token_counts(self) -> dict[str, int]:
        return {"image": self.num_image_tokens, "video": self.video_num_queries, "audio": self.audio_num_queries}


AutoConfig.register("omniground_vit", OmniGroundViTConfig, exist_ok=True)
AutoConfig.register("omniground_audio_encoder", OmniGroundAudioEncoderConfig, exist_ok=True)
AutoConfig.register("omniground", OmniGroundConfig, exist_ok=True)


# =================================================================================================
# Encoders
# =================================================================================================


def sinusoids(length: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal positions (length, dim), as in Whisper."""
    inv = torch.exp(-math.log(10000) * torch.arange(dim // 2) / max(1, dim // 2 - 1))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([t.sin(), t.cos()], dim=1)


def _transformer(dim: int, heads: int, ffn: int, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        dim, heads, ffn, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class SmallViT(nn.Module):
    """Patchify -> learned positions -> pre-norm transformer. No CLS token: patch tokens only."""

    def __init__(self, config: OmniGroundViTConfig):
        super().__init__()
        grid = config.image_size // config.patch_size
        if config.conv_stem:
            # Early convolutions (Xiao et al. 2021): log2(patch) stride-2 3x3 convs (GroupNorm, GELU), widths
            # doubling up to the hidden size, then a 1x1; same patch grid. One linear map of 8x8x3 pixels loses
            # the detail that tells 51 small kinds apart (configs/omniground-tiny/README.md: "Conv stem").
            n = int(math.log2(config.patch_size))
            if 2**n != config.patch_size:
                raise ValueError(f"conv_stem needs a power-of-two patch size, got {config.patch_size}")
            widths = [config.num_channels] + [config.hidden_size // 2 ** (n - 1 - i) for i in range(n)]
            convs = []
            for a, b in zip(widths, widths[1:]):
                convs += [nn.Conv2d(a, b, 3, 2, 1, bias=False), nn.GroupNorm(math.gcd(8, b), b), nn.GELU()]
            self.patch_embed = nn.Sequential(*convs, nn.Conv2d(widths[-1], config.hidden_size, 1))
        else:
            self.patch_embed = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, config.patch_size)
        self.position_embedding = nn.Parameter(torch.randn(grid * grid, config.hidden_size) * 0.02)
        self.encoder = _transformer(
            config.hidden_size, config.num_attention_heads, config.intermediate_size, config.num_hidden_layers
        )
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixel_values)  # (B, D, g, g)
        x = x.flatten(2).transpose(1, 2) + self.position_embedding  # (B, g*g, D)
        return self.norm(self.encoder(x))  # (B, P, D)


class SmallAudioEncoder(nn.Module):
    """Log-mel (B, n_mels, T) -> two convs (stride 2, as Whisper) -> sinusoidal positions -> transformer."""

    def __init__(self, config: OmniGroundAudioEncoderConfig):
        super().__init__()
        d = config.hidden_size
        self.conv1 = nn.Conv1d(config.num_mel_bins, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.max_source_positions = config.max_source_positions
        self.register_buffer("positions", self.fixed_buffers()["positions"], persistent=False)
        self.encoder = _transformer(d, config.num_attention_heads, config.intermediate_size, config.num_hidden_layers)
        self.norm = nn.LayerNorm(d)

    def fixed_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers computed, not saved: `from_pretrained` builds on the meta device and must refill them."""
        return {"positions": sinusoids(self.max_source_positions, self.conv1.out_channels)}

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(input_features))))  # (B, D, T/2)
        x = x.transpose(1, 2)  # (B, T/2, D)
        if x.shape[1] > self.positions.shape[0]:
            raise ValueError(f"audio window of {x.shape[1]} frames exceeds max_source_positions {len(self.positions)}")
        return self.norm(self.encoder(x + self.positions[: x.shape[1]].to(x.dtype)))  # (B, T/2, D)


class VisionTower(nn.Module):
    """Image/frame encoder chosen by config -> patch tokens (B, P, Dv).

    `num_calls` / `num_items` count forward calls and images encoded: generation must encode each
    request's media once, and tests read these counters to prove it.
    """

    def __init__(self, config: OmniGroundConfig, encoder: nn.Module | None = None):
        super().__init__()
        vc = config.vision_config
        self.model_type = vc.model_type
        self.feature_layer = config.vision_feature_layer
        if encoder is None:
            encoder = SmallViT(vc) if vc.model_type == "omniground_vit" else AutoModel.from_config(vc)
        self.encoder = encoder
        self.hidden_size = int(vc.hidden_size)
        self.num_calls = 0
        self.num_items = 0

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.num_calls += 1
        self.num_items += pixel_values.shape[0]
        if isinstance(self.encoder, SmallViT):
            return self.encoder(pixel_values)
        out = self.encoder(pixel_values=pixel_values, output_hidden_states=True)
        tokens = out.hidden_states[self.feature_layer]  # (B, 1+P, Dv) for CLIP, (B, P, Dv) for SigLIP
        return tokens[:, 1:] if self.model_type == "clip_vision_model" else tokens


class AudioEncoder(nn.Module):
    """Per-window audio encoder chosen by config -> `tokens_per_window` tokens per window (B, k, Da)."""

    def __init__(self, config: OmniGroundConfig, encoder: nn.Module | None = None):
        super().__init__()
        ac = config.audio_config
        if ac.model_type == "whisper":
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            if config.audio_frames_per_window != 2 * ac.max_source_positions:
                raise ValueError(
                    f"Whisper encoder needs windows of {2 * ac.max_source_positions / 100:g} s "
                    f"(audio_window_seconds is {config.audio_window_seconds:g})"
                )
            self.encoder = encoder if encoder is not None else WhisperEncoder(ac)
            self.hidden_size = int(ac.d_model)
        else:
            self.encoder = encoder if encoder is not None else SmallAudioEncoder(ac)
            self.hidden_size = int(ac.hidden_size)
        self.tokens_per_window = config.audio_tokens_per_window
        self.num_calls = 0
        self.num_items = 0

    def frames(self, input_features: torch.Tensor) -> torch.Tensor:
        """Log-mel windows (B, n_mels, T) -> the encoder's frames (B, T / 2, Da), 20 ms each."""
        if isinstance(self.encoder, SmallAudioEncoder):
            return self.encoder(input_features)
        return self.encoder(input_features=input_features).last_hidden_state

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        self.num_calls += 1
        self.num_items += input_features.shape[0]
        hidden = self.frames(input_features)  # (B, T', Da)
        pooled = F.adaptive_avg_pool1d(hidden.transpose(1, 2), self.tokens_per_window)  # (B, Da, k)
        return pooled.transpose(1, 2)  # (B, k, Da)


def pool_patch_grid(tokens: torch.Tensor, stride: int) -> torch.Tensor:
    """Average-pool square patch-grid tokens (B, g*g, D) -> (B, (g/stride)^2, D)."""
    if stride <= 1:
        return tokens
    b, p, d = tokens.shape
    g = math.isqrt(p)
    grid = tokens.transpose(1, 2).reshape(b, d, g, g)
    return F.avg_pool2d(grid, stride).flatten(2).transpose(1, 2)


# =================================================================================================
# Adapters: image MLP; time embedding + learned-query resampler for video and audio
# =================================================================================================


class ImageProjector(nn.Module):
    """2-layer MLP (Dv -> H -> H), the LLaVA-1.5 / original adapter."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x)))


class TimestampEmbedding(nn.Module):
    """The real time of a frame/window -> a vector added to its tokens.

    Features are sinusoids of the absolute time in seconds (periods 0.5 s .. ~1 h, so the model can
    tell 3 s from 4 s in any clip) and of the relative position t/duration (what `{t1,t2}` answers
    are written in), mapped through a small MLP. The original used a learned embedding of the frame
    index, which knows neither the clip's length nor where frames really are.
    """

    def __init__(self, dim: int, num_frequencies: int = 16):
        super().__init__()
        self.num_frequencies = num_frequencies
        for name, value in self.fixed_buffers().items():
            self.register_buffer(name, value, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(4 * num_frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def fixed_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers computed, not saved: `from_pretrained` builds on the meta device and must refill them."""
        periods = torch.logspace(math.log10(0.5), math.log10(4096.0), self.num_frequencies)
        rel = math.pi * 2.0 ** torch.arange(self.num_frequencies).float() / 2
        return {"abs_freqs": 2 * math.pi / periods, "rel_freqs": rel}

    def forward(self, seconds: torch.Tensor, duration: torch.Tensor) -> torch.Tensor:
        # seconds (N, S), duration (N,) -> (N, S, dim)
        seconds = seconds.float()
        rel = seconds / duration.float().clamp_min(1e-3)[:, None]
        a = seconds[..., None] * self.abs_freqs  # (N, S, nf)
        r = rel[..., None] * self.rel_freqs
        feats = torch.cat([a.sin(), a.cos(), r.sin(), r.cos()], dim=-1)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


class ResamplerLayer(nn.Module):
    """Queries cross-attend to the media tokens, then self-attend, then an MLP (pre-norm)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_ignore: torch.Tensor,
                kv_bias: torch.Tensor | None = None) -> torch.Tensor:
        """kv_bias: optional (N * heads, Q, K) additive attention bias, padding already at -inf."""
        kv = self.norm_kv(kv)
        h = self.norm_q(q)
        if kv_bias is None:
            q = q + self.cross_attn(h, kv, kv, key_padding_mask=kv_ignore, need_weights=False)[0]
        else:
            q = q + self.cross_attn(h, kv, kv, attn_mask=kv_bias, need_weights=False)[0]
        h = self.norm_self(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        return q + self.mlp(self.norm_mlp(q))


class MediaResampler(nn.Module):
    """Q-Former-like adapter: N learned queries read a variable number of timed steps -> N LM tokens.

    Input: tokens (N, S, T, Din) -- S time steps (frames or audio windows) of T tokens each, a step mask
    (N, S) for items with fewer steps, and each step's time in seconds (N, S) plus the item duration (N,).
    Output: (N, num_queries, out_dim). The LM sees a fixed number of tokens whatever the clip length.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_queries: int, num_layers: int, num_heads: int,
                 time_anchored: bool = False):
        super().__init__()
        self.time_anchored = time_anchored  # see OmniGroundConfig.time_anchored_queries
        self.num_heads = num_heads
        self.input_proj = nn.Linear(in_dim, hidden)
        self.time_embedding = TimestampEmbedding(hidden)
        self.queries = nn.Parameter(torch.randn(num_queries, hidden) * 0.02)
        self.layers = nn.ModuleList(ResamplerLayer(hidden, num_heads) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden)
        self.output_proj = nn.Linear(hidden, out_dim)

    def forward(self, tokens, step_mask, seconds, duration, step_seconds: float = 0.0) -> torch.Tensor:
        """step_seconds: how long one step lasts (audio windows; 0 for video frames, which are instants)."""
        n, s, t, _ = tokens.shape
        x = self.input_proj(tokens) + self.time_embedding(seconds, duration)[:, :, None, :]  # (N, S, T, D)
        x = x.reshape(n, s * t, -1)  # (N, S*T, D)
        ignore = ~step_mask.bool().repeat_interleave(t, dim=1)  # (N, S*T), True = padding
        q = self.queries.unsqueeze(0).expand(n, -1, -1)  # (N, Q, D)
        bias = self.time_bias(seconds, duration, t, step_seconds, ignore) if self.time_anchored else None
        for layer in self.layers:
            q = layer(q, x, ignore, bias)
        out = self.output_proj(self.norm(q))  # (N, Q, out_dim)
        return out - out.mean(1, keepdim=True) if self.time_anchored else out

    def time_bias(self, seconds, duration, t: int, step_seconds: float, ignore) -> torch.Tensor:
        """(N * heads, Q, S*T) attention bias: -(r - c_i)^2 / (2 sigma^2), r a token's time / duration,
        c_i = (i + 0.5) / Q query i's slot, sigma = 1 / Q; padding at -inf."""
        nq = self.queries.shape[0]
        offsets = (torch.arange(t, device=seconds.device, dtype=seconds.dtype) + 0.5) / t * step_seconds  # (T,)
        rel = (seconds[:, :, None] + offsets) / duration[:, None, None]  # (N, S, T)
        rel = rel.reshape(rel.shape[0], -1)  # (N, S*T)
        centres = (torch.arange(nq, device=rel.device, dtype=rel.dtype) + 0.5) / nq  # (Q,)
        bias = -((rel[:, None, :] - centres[None, :, None]) * nq) ** 2 / 2  # (N, Q, S*T)
        bias = bias.masked_fill(ignore[:, None, :], float("-inf"))
        return bias.to(self.queries.dtype).repeat_interleave(self.num_heads, dim=0)


# =================================================================================================
# Location pointer: `<loc_k>` tied to where bin k is in the image
# =================================================================================================


def bin_interpolation(num_bins: int, grid: int) -> torch.Tensor:
    """(num_bins, grid) weights: bin k (coordinate k/(n-1) of the square) as a linear mix of patch columns.

    Patch c covers [c/g, (c+1)/g], centre (c+0.5)/g; a coordinate between two centres mixes the two.
    """
    v = torch.linspace(0, 1, num_bins) * grid - 0.5  # continuous patch index
    v = v.clamp(0, grid - 1)
    lo = v.floor().long().clamp(max=grid - 1)
    hi = (lo + 1).clamp(max=grid - 1)
    w_hi = v - lo.float()
    m = torch.zeros(num_bins, grid)
    m[torch.arange(num_bins), lo] += 1 - w_hi
    m[torch.arange(num_bins), hi] += w_hi
    return m


class LocationPointer(nn.Module):
    """Ties the `<loc_k>` tokens to positions in the request's image.

    From the image's adapter tokens (LM space, a g x g grid) it takes, for every bin k, the column
    feature at x = k/(n-1) (pooled over rows) and the row feature at y = k/(n-1) (pooled over columns):
    X, Y (B, n, H). Then
      logits[<loc_k>] += h . (U_x X_k) + h . (U_y Y_k)      (the LM head keeps its own row as a bias)
      embed(<loc_k>)  += V_x X_k + V_y Y_k
    (both terms scaled by 1/sqrt(H), as attention: unscaled, the first AdamW steps blew the loc logits up).
    A box's x and y tokens share the bins, so both terms are always present: the hidden state selects
    which one matters (it knows from context which coordinate comes next). All four maps start at zero,
    so a fresh pointer model computes exactly what the model without it does.
    """

    def __init__(self, hidden: int, num_bins: int):
        super().__init__()
        self.num_bins = num_bins
        self.scale = hidden**-0.5  # as attention's 1/sqrt(d): both sides are O(1) per dimension
        self.norm = nn.LayerNorm(hidden)
        self.out_x = nn.Parameter(torch.zeros(hidden, hidden))
        self.out_y = nn.Parameter(torch.zeros(hidden, hidden))
        self.in_x = nn.Parameter(torch.zeros(hidden, hidden))
        self.in_y = nn.Parameter(torch.zeros(hidden, hidden))

    def bin_features(self, image_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, g*g, H) adapter tokens -> column features X and row features Y, each (N, n, H)."""
        n_img, p, h = image_tokens.shape
        g = math.isqrt(p)
        grid = self.norm(image_tokens).reshape(n_img, g, g, h)  # (N, rows, cols, H)
        m = bin_interpolation(self.num_bins, g).to(grid)  # (n, g)
        cols, rows = grid.mean(1), grid.mean(2)  # (N, g, H) each
        return torch.einsum("kg,ngh->nkh", m, cols), torch.einsum("kg,ngh->nkh", m, rows)

    def input_embeddings(self, feats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = feats
        return (x @ self.in_x.T + y @ self.in_y.T) * self.scale  # (B, n, H)

    def logits(self, hidden: torch.Tensor, feats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """hidden (B, L, H) -> (B, L, n) pointer logits of the location bins."""
        x, y = feats
        keys = x @ self.out_x.T, y @ self.out_y.T  # (B, n, H) each
        return (torch.einsum("blh,bnh->bln", hidden, keys[0]) + torch.einsum("blh,bnh->bln", hidden, keys[1])) * self.scale


def first_item_per_row(input_ids: torch.Tensor, pad_token_id: int, tokens_per_item: int) -> torch.Tensor:
    """(B,) index into the batch's media of one kind (its pad token) of each row's first; -1 for a row without."""
    per_row = (input_ids == pad_token_id).sum(1) // max(1, tokens_per_item)  # (B,)
    first = torch.cumsum(per_row, 0) - per_row
    return torch.where(per_row > 0, first, torch.full_like(first, -1))


# =================================================================================================
# Region boxes: a box is a pointer at one of the image's patches, read off a box regressor
# =================================================================================================


def pairwise_box_iou(boxes: torch.Tensor, target: torch.Tensor, generalized: bool = False) -> torch.Tensor:
    """boxes (M, P, 4), target (M, 4), x1 y1 x2 y2 -> IoU (M, P); `generalized`: GIoU (as DETR's box loss)."""
    t = target[:, None, :]
    w = (torch.minimum(boxes[..., 2], t[..., 2]) - torch.maximum(boxes[..., 0], t[..., 0])).clamp_min(0)
    h = (torch.minimum(boxes[..., 3], t[..., 3]) - torch.maximum(boxes[..., 1], t[..., 1])).clamp_min(0)
    inter = w * h
    area = lambda b: (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)  # noqa: E731
    union = area(boxes) + area(t) - inter
    iou = inter / union.clamp_min(1e-9)
    if not generalized:
        return iou
    hull = (torch.maximum(boxes[..., 2], t[..., 2]) - torch.minimum(boxes[..., 0], t[..., 0])) * (
        torch.maximum(boxes[..., 3], t[..., 3]) - torch.minimum(boxes[..., 1], t[..., 1]))
    return iou - (hull - union) / hull.clamp_min(1e-9)


def region_targets(boxes: torch.Tensor, target: torch.Tensor, min_iou: float = 0.5) -> torch.Tensor:
    """(M, P) bool: the patches whose regressed box would answer right (IoU >= min_iou with the target);
    where none would, the patch holding the target's centre."""
    good = pairwise_box_iou(boxes, target) >= min_iou
    g = math.isqrt(boxes.shape[1])
    cx = ((target[:, 0] + target[:, 2]) / 2 * g).long().clamp(0, g - 1)
    cy = ((target[:, 1] + target[:, 3]) / 2 * g).long().clamp(0, g - 1)
    centre = F.one_hot(cy * g + cx, boxes.shape[1]).bool()
    return torch.where(good.any(1, keepdim=True), good, centre)


def absent_targets(target: torch.Tensor) -> torch.Tensor:
    """Pointer targets (M, K) -> (M,) bool: the rows of all -1, phrases the image lacks (`region_presence`)."""
    return (target < 0).all(-1)


def box_bins(box: torch.Tensor, num_bins: int) -> list[int]:
    """A regressed box (4,) in [0, 1] -> its four location bins, ordered and at least one bin wide."""
    x1, y1, x2, y2 = (box.clamp(0, 1) * (num_bins - 1)).round().long().tolist()
    (x1, x2), (y1, y2) = sorted((x1, x2)), sorted((y1, y2))
    return [x1, y1, max(x2, min(x1 + 1, num_bins - 1)), max(y2, min(y1 + 1, num_bins - 1))]


def written_since(ids: list[int], marker_id: int, loc_start: int, num_bins: int, length: int) -> int | None:
    """How many of a box's (`length` 4) or span's (2) location tokens `ids` end with (0 right after its
    marker, `<|box|>` / `<|span|>`); None if the ids do not end inside one. A decode step sees one token:
    only the marker itself answers there; a prompt without a cache (or ending part-written) is read back
    to its marker."""
    j = 0
    while j < min(length, len(ids) - 1) and loc_start <= ids[-1 - j] < loc_start + num_bins:
        j += 1
    return j if j < length and len(ids) > j and ids[-1 - j] == marker_id else None


def marked_locations(input_ids: torch.Tensor, labels: torch.Tensor, marker_id: int, loc_start: int, num_bins: int,
                     length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every target box (`length` 4) or span (2) in a training batch: a marker followed by `length` location
    tokens, all labels -> rows (M,), the markers' positions (M,) and the locations (M, length) in [0, 1]."""
    n_pos = input_ids.shape[1] - length
    if n_pos < 1:
        empty = input_ids.new_zeros(0)
        return empty, empty, input_ids.new_zeros(0, length, dtype=torch.float)
    after = torch.stack([input_ids[:, 1 + j : n_pos + 1 + j] for j in range(length)], -1)  # (B, n_pos, length)
    at = (input_ids[:, :n_pos] == marker_id) & ((after >= loc_start) & (after < loc_start + num_bins)).all(-1)
    at &= labels[:, 1 : n_pos + 1] != -100
    rows, pos = at.nonzero(as_tuple=True)
    return rows, pos, (after[rows, pos] - loc_start).float() / (num_bins - 1)


class ZeroLinear(nn.Linear):
    """A linear map that starts at zero (also where `_init_weights` or the pointer refit's `reinitialise`
    start it again): a term added through it changes nothing until trained, so checkpoints saved before
    the term existed load and answer exactly as before."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


def text_before(hidden: torch.Tensor, is_text: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (B, T, H), is_text (B, T) and markers at (rows, pos) (M,) -> each marker's text so far: the
    hidden states of its row's text tokens up to and including it, in order, (M, L, H), and which of the
    L are real (M, L) -- L the longest such text; shorter ones end in padding."""
    keep = is_text[rows] & (torch.arange(hidden.shape[1], device=hidden.device) <= pos[:, None])
    length = max(int(keep.sum(1).max()), 1) if len(rows) else 1
    idx = torch.sort(keep.int(), dim=1, descending=True, stable=True).indices[:, :length]  # kept first, in order
    return hidden[rows[:, None], idx], keep.gather(1, idx)


class TextReread(nn.Module):
    """The state at a `<|box|>` re-reads the text before it: multi-head attention from it over the LM's
    hidden states of the text tokens up to the box (`text_before`; media tokens left out), added to it
    through a map that starts at zero (`ZeroLinear`).

    Why: at the box the LM's last state tells only in part which object the phrase names. A linear probe
    reads the named kind off it for 83% of held-out REC phrases, 55% of relations ("the cat to the left of
    the dog": the anchor comes last); the pointer's misses on held-out REC were mostly boxes on an object of
    another kind. Fitted in the pointer refit, held-out REC with the phrase given rose 0.779 -> 0.793 (test)
    and 0.737 -> 0.793 (second image draw) -- names and relations most (configs/omniground-tiny/README.md).
    """

    def __init__(self, hidden: int, heads: int = 4):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"region_reread: hidden size {hidden} is not a multiple of {heads} heads")
        self.heads = heads
        self.norm_query, self.norm_text = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.q, self.k, self.v = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.out = ZeroLinear(hidden, hidden)

    def forward(self, hidden: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """hidden (M, H) at boxes, their text so far (M, L, H) and its mask (M, L) -> (M, H).

        Attention of one query per head over the text, softmax_l(q . k_l / sqrt(d)) . v_l with k_l = W_k t_l + b_k,
        v_l = W_v t_l + b_v and t_l = g * norm(x_l) + b (the text's LayerNorm), computed without mapping each of
        the L tokens: q . k_l = (g * W_k^T q) . norm(x_l) + a term the same for every token (softmax drops it),
        and as the weights a_l sum to one the read is W_v (g * sum_l a_l norm(x_l) + b) + b_v. The same numbers
        for L H + H^2 work per head instead of L H^2, and nothing of size L to differentiate but the weights:
        with the patch scores' like change, the pointer refit's region fit ran 5.8x as fast, about 50 tokens re-read
        a box (benchmarks/bench_train.py --stages pointers)."""
        (m, _, h), n = text.shape, self.heads
        q = self.q(self.norm_query(hidden)).view(m, n, h // n)
        normed = F.layer_norm(text, (h,), eps=self.norm_text.eps)
        query_in_text = torch.einsum("mnd,ndh->mnh", q, self.k.weight.view(n, h // n, h)) * self.norm_text.weight
        scores = (query_in_text @ normed.transpose(1, 2)) * (h // n) ** -0.5  # (M, heads, L)
        mask = text_mask.to(torch.bool)
        # a finite fill: a row without text (a clip the reread is off for) reads zeros, as attention does, not NaN
        weights = scores.masked_fill(~mask[:, None, :], torch.finfo(scores.dtype).min).softmax(-1)
        read_text = (weights @ normed) * self.norm_text.weight + self.norm_text.bias  # sum_l a_l t_l, (M, heads, H)
        read = torch.einsum("mnh,ndh->mnd", read_text, self.v.weight.view(n, h // n, h)) + self.v.bias.view(n, -1)
        return hidden + self.out((read * mask.any(1)[:, None, None]).reshape(m, h))


class RegionPointer(nn.Module):
    """A box as a pointer at one of the image's patches (Groma-style regions, one per patch).

    `box` regresses, from each vision-tower patch feature, the box of the object that covers the patch
    (FCOS-style; trained in stage 0 on the generator's exact labels, frozen with the encoders). From
    the LM's hidden state at a `<|box|>` token, `query` . `key` scores which patch the box names
    (trained from stage 1 on, like the adapters). When generating, the model then writes the patch box
    most of the pointer's probability agrees with (`agreed_choice`) as its four `<loc_k>` tokens, so
    answers keep their format. Why: a from-scratch LM learns to pick one of g*g patches far sooner than
    to write four coordinates (feasibility.md; configs/omniground-tiny/README.md). Training maximises the probability of the patches whose
    regressed box would be right (`region_targets`).

    With `region_presence`, one more candidate shares the softmax: "nothing here" (`absent`, scored from
    the query alone). Fitted in the pointer refit on phrases the image lacks, it takes their probability,
    so the box written for such a phrase gets a low confidence -- the pointer's raw scores tell an absent
    phrase better than the LM's text does (configs/omniground-tiny/README.md).

    With `region_reread`, the query is computed from the box's state after it re-reads the text before it
    (`TextReread`); `logits`, `loss` and `choose` then also take that text and its mask.

    With `region_heads` K > 1, K - 1 more heads like this one (`more`: their own query, key, presence and
    reread; this one's box regressor) answer with it: `choose` averages the K heads' probabilities; `loss` is
    this head's own, and each is trained on it. Why: the refit fits a head afresh, and two fits of the same
    recipe differ by 2 points on held-out REC; three fitted from different starts and averaged beat the
    average single head on every held-out set (configs/omniground-tiny/README.md).
    """

    def __init__(self, vision_dim: int, hidden: int, presence: bool = False, reread: bool = False, heads: int = 1,
                 box: bool = True):
        super().__init__()
        # the box regressor; the `more` heads use their first's
        self.box = nn.Sequential(nn.Linear(vision_dim, vision_dim), nn.GELU(), nn.Linear(vision_dim, 4)) \
            if box else None
        self.key = nn.Sequential(nn.LayerNorm(vision_dim), nn.Linear(vision_dim, hidden))
        self.query = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden))
        self.scale = hidden**-0.5
        # `region_presence`: the score of "nothing here", one more candidate in the same softmax
        self.absent = nn.Linear(hidden, 1) if presence else None
        self.reread = TextReread(hidden) if reread else None  # `region_reread`
        self.more = nn.ModuleList(RegionPointer(vision_dim, hidden, presence, reread, box=False)
                                  for _ in range(heads - 1))  # `region_heads`

    def members(self) -> list["RegionPointer"]:
        """The heads that answer together: this one and `more`."""
        return [self, *self.more]

    def boxes(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, P, Dv) patch features -> (N, P, 4) boxes, x1 <= x2, y1 <= y2 in [0, 1] of the model's square frame."""
        x1, y1, x2, y2 = torch.sigmoid(self.box(patches)).unbind(-1)
        return torch.stack([torch.minimum(x1, x2), torch.minimum(y1, y2), torch.maximum(x1, x2),
                            torch.maximum(y1, y2)], -1)

    def logits(self, hidden: torch.Tensor, patches: torch.Tensor, *text: torch.Tensor) -> torch.Tensor:
        """hidden (M, H) at `<|box|>` tokens, their images' patch features (M, P, Dv) [, with reread their text
        so far (M, L, H) and its mask (M, L)] -> (M, P) patch scores; with presence (M, P + 1), the last for
        "nothing here"."""
        if self.reread is not None:
            hidden = self.reread(hidden, *text)
        query = self.query(hidden)
        # query . key(p) with key(p) = W (g * norm(p) + b) + c, computed as (g * W^T query) . norm(p)
        # + query . (W b + c): the query mapped once instead of every patch (as TextReread maps its query)
        norm, proj = self.key
        in_patch_space = (query @ proj.weight) * norm.weight
        # sums, not matrix-vector products: those changed in the last bits with where memory lay, and two refits
        # from one start then differed
        offset = (query * ((proj.weight * norm.bias).sum(1) + proj.bias)).sum(-1)
        normed = F.layer_norm(patches, patches.shape[-1:], eps=norm.eps)
        scores = (torch.einsum("mv,mpv->mp", in_patch_space, normed) + offset[:, None]) * self.scale
        return scores if self.absent is None else torch.cat([scores, self.absent(query)], 1)

    def loss(self, hidden: torch.Tensor, patches: torch.Tensor, boxes: torch.Tensor, target: torch.Tensor,
             *text: torch.Tensor):
        """Mean -log P(a patch whose box is right) over M boxes; target (M, 4) in [0, 1]. With presence, a
        target of all -1 is a phrase the image lacks: its right answer is "nothing here"."""
        logits = self.logits(hidden, patches, *text).float()
        good = region_targets(boxes.detach().float(), target.float())
        if self.absent is not None:
            absent = absent_targets(target)[:, None]
            good = torch.cat([good & ~absent, absent], 1)
        return (logits.logsumexp(1) - logits.masked_fill(~good, float("-inf")).logsumexp(1)).mean()

    def choose(self, hidden: torch.Tensor, patches: torch.Tensor, boxes: torch.Tensor, num_bins: int,
               *text: torch.Tensor) -> tuple[list[int], float]:
        """hidden (H,) at a `<|box|>`, one image's patch features (P, Dv) and boxes (P, 4) -> the box of highest
        expected IoU under the pointer's probabilities (`agreed_choice`) as four bins, and its confidence:
        the probability of the patches whose box agrees with it (IoU >= 0.5), as the forced tokens' own
        probability is 1. With presence, "nothing here" keeps its share: a phrase the image lacks gets a
        box of low confidence. With reread, `text` is the box's text so far (L, H) and its mask (L,). With
        more heads, their probabilities averaged."""
        one = (hidden[None], patches[None], boxes[None], num_bins, *(t[None] for t in text))
        bins, confidences = self.choose_many(*one)
        return bins[0], confidences[0]

    def choose_many(self, hidden: torch.Tensor, patches: torch.Tensor, boxes: torch.Tensor, num_bins: int,
                    *text: torch.Tensor) -> tuple[list[list[int]], list[float]]:
        """`choose` for M boxes at once: hidden (M, H), patches (M, P, Dv), boxes (M, P, 4)[, text (M, L, H) and
        its mask (M, L)] -> each one's four bins and confidence (the pointer refit scores its tens of thousands
        of training boxes so)."""
        return choose_region(self.probabilities(hidden, patches, *text), boxes, num_bins)

    def probabilities(self, hidden: torch.Tensor, patches: torch.Tensor, *text: torch.Tensor) -> torch.Tensor:
        """(M, P) over the patches -- (M, P + 1) with presence, the last "nothing here" -- the heads' averaged."""
        return torch.stack([m.logits(hidden, patches, *text).float().softmax(-1) for m in self.members()]).mean(0)


def choose_region(probs: torch.Tensor, boxes: torch.Tensor, num_bins: int) -> tuple[list[list[int]], list[float]]:
    """Probabilities (M, >= N) of N candidate boxes (M, N, 4) -- any further column ("nothing here") keeps its
    share -- -> each row's box of highest expected IoU (`agreed_choice`) as four bins, and its confidence."""
    choice, confidence = agreed_choice(probs[:, : boxes.shape[1]], boxes.float())
    chosen = boxes[torch.arange(len(boxes), device=boxes.device), choice]
    return [box_bins(box, num_bins) for box in chosen], confidence.tolist()


def mirrored_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes (..., 4) in a square frame -> the same boxes in the frame mirrored left to right."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([1 - x2, y1, 1 - x1, y2], -1)


def with_mirror_view(probs: torch.Tensor, boxes: torch.Tensor, mirror_probs: torch.Tensor, mirror_boxes: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """A box's candidates (probabilities (M, P[+1]), boxes (M, P, 4)) and those of its mirrored view (the boxes in
    the mirrored frame) -> both views' candidates in one frame, 2P, each view's probabilities halved: what
    `choose_region` reads for `region_mirror`. "Nothing here" keeps the mean of its two shares, outside."""
    n = boxes.shape[1]
    return (torch.cat([probs[:, :n], mirror_probs[:, :n]], 1) / 2,
            torch.cat([boxes, mirrored_boxes(mirror_boxes)], 1))


def agreed_choice(probs: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate answers' probabilities (..., N) and boxes (..., N, 4) -> the candidate of highest expected IoU
    with the pointer's answer (...), and the probability of the candidates that agree with it (IoU >= 0.5) (...).

    Why not the most probable candidate: an object covers several patches and a span's edges blur over
    neighbouring slots, so the probability of one answer is spread over near-identical ones; the metric is
    IoU, and the answer that most of the mass agrees with scores better (minimum-Bayes-risk decoding:
    held-out video R@1 at IoU 0.5 0.730 -> 0.785, REC 0.772 -> 0.790; configs/omniground-tiny/README.md).
    """
    n = boxes.shape[-2]
    flat = boxes.reshape(-1, n, 4)
    agree = pairwise_box_iou(flat.repeat_interleave(n, 0), flat.reshape(-1, 4)).view(*boxes.shape[:-2], n, n)
    choice = (agree @ probs[..., None])[..., 0].argmax(-1)
    same = agree.gather(-2, choice[..., None, None].expand(*choice.shape, 1, n)).squeeze(-2) >= 0.5
    same.scatter_(-1, choice[..., None], True)  # even a degenerate box agrees with itself
    return choice, (probs * same).sum(-1)


# =================================================================================================
# Span pointers: a span is a pointer at the clip's time slots where it starts and where it ends
# =================================================================================================


def span_slots(target: torch.Tensor, num_slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spans (M, 2) as fractions of their clips with (M,) time slots each -> the first and last slot (M,) of
    the slot-aligned span nearest each (boundaries rounded to the nearest slot edge, at least one slot)."""
    q = num_slots.to(target.dtype)
    first = torch.minimum((target[:, 0] * q).round().long().clamp_min(0), num_slots - 1)
    last = torch.minimum(torch.maximum((target[:, 1] * q).round().long() - 1, first), num_slots - 1)
    return first, last


def span_bins(first: int, last: int, num_slots: int, num_bins: int) -> list[int]:
    """Slots first..last of a clip's `num_slots` -> the span's two location bins [first/Q, (last+1)/Q]."""
    return [round(first / num_slots * (num_bins - 1)), round((last + 1) / num_slots * (num_bins - 1))]


class SlotEdges(ZeroLinear):
    """(M, Q, H) time slots -> how each differs from the slot before and after it, projected to (M, Q, H).
    Starts at zero: added to the slots, it changes nothing until trained."""

    def __init__(self, hidden: int):
        super().__init__(2 * hidden, hidden)

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        before, after = F.pad(slots, (0, 0, 1, 0))[:, :-1], F.pad(slots, (0, 0, 0, 1))[:, 1:]
        return super().forward(torch.cat([slots - before, after - slots], -1))


class SpanPointer(nn.Module):
    """A time span as two pointers at the clip's time slots: where it starts and where it ends.

    With time-anchored resampler queries (`time_anchored_queries`) the clip's output token i stands for the
    slice [i/Q, (i+1)/Q] of its duration. From the LM's hidden state at a `<|span|>` token, `query` . `key`
    scores every slot as the span's first and as its last slot (two heads); when generating, the model
    writes the pair first <= last of highest expected IoU (`agreed_choice`) as its two `<loc_k>` tokens, so
    answers keep their format. Trained from stage 1 on, with the adapters (cross-entropy on the target's
    slots, `span_slots`).
    Why: the region pointer's lesson for time -- the from-scratch LM wrote spans no better than the
    middle half of the clip (configs/omniground-tiny/README.md).

    A slot's key also sees how it differs from its neighbours (`edges`): a span starts where the clip
    changes, which no slot shows on its own (held-out R@1 at IoU 0.5 0.73 -> 0.78 when refitted,
    configs/omniground-tiny/README.md). `edges` starts at zero, so checkpoints saved before it point as
    they did.

    `logits`, `loss` and `choose` take whether each span's clip is audio (else video): two options act on the
    kinds of clip they list.
    With `span_reread`, the query is computed from the span's state after it re-reads the text before it
    (`TextReread`, as the region pointer's); `logits`, `loss` and `choose` then also take that text and its
    mask. Why per kind: refitted on omniground-tiny with it on both, audio R@1 at IoU 0.5 rose 0.79 -> 0.91
    (test) and video fell 0.79 -> 0.75 (unseen combinations 0.61 -> 0.54); on audio clips only (shipped), audio
    rose to 0.88 and video kept its figures (0.785; 0.65 unseen) (configs/omniground-tiny/README.md).

    With `span_key_mlp`, the key reads the slots through an MLP (`key_mlp`) instead of one linear map. Why:
    with the map the refitted head got its own training video spans right (0.79) no more often than held-out
    ones; with an MLP on video clips held-out video rose by 7-12 points (audio, which the reread already lifts,
    over-fitted: off there; configs/omniground-tiny/README.md).

    With `span_heads` K > 1, K - 1 more heads like this one (`more`) answer with it: `choose` averages the K
    heads' probabilities of each pair first <= last; `loss` is this head's own, and each is trained on it.
    Why: as for the region pointer's heads, fits from different starts err apart. On omniground-tiny three
    lifted audio R@1 at IoU 0.5 by 0.5-2 points and cost video 2-5, so it ships one
    (configs/omniground-tiny/README.md).
    """

    def __init__(self, hidden: int, reread: Sequence[str] = (), key_mlp: Sequence[str] = (), heads: int = 1):
        super().__init__()
        self.reread_kinds, self.key_mlp_kinds = tuple(reread), tuple(key_mlp)  # kinds of clip
        self.edges = SlotEdges(hidden)
        self.reread = TextReread(hidden) if reread else None  # `span_reread`
        self.key = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 2 * hidden))
        self.key_mlp = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(),
                                     nn.Linear(hidden, 2 * hidden)) if key_mlp else None  # `span_key_mlp`
        self.query = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 2 * hidden))
        self.scale = hidden**-0.5
        self.more = nn.ModuleList(SpanPointer(hidden, reread, key_mlp) for _ in range(heads - 1))  # `span_heads`

    def members(self) -> list["SpanPointer"]:
        """The heads that answer together: this one and `more`."""
        return [self, *self.more]

    def logits(self, hidden: torch.Tensor, slots: torch.Tensor, mask: torch.Tensor, audio: torch.Tensor,
               *text: torch.Tensor) -> torch.Tensor:
        """hidden (M, H) at `<|span|>` tokens, their clips' slots (M, Q, H), slot mask (M, Q) and which clips
        are audio (M,) [, with reread their text so far (M, L, H) and its mask (M, L)] -> (M, 2, Q) scores of
        each slot as the first (0) and last (1); padding slots -inf."""
        if self.reread is not None:
            on = self._on(self.reread_kinds, audio)[:, None]
            hidden = torch.where(on, self.reread(hidden, *text), hidden)
        slots = slots * mask[..., None]  # padding slots are no neighbours
        slots = slots + self.edges(slots)
        q = self.query(hidden).unflatten(-1, (2, -1))  # (M, 2, H)
        k = self.key(slots)
        if self.key_mlp is not None:
            k = torch.where(self._on(self.key_mlp_kinds, audio)[:, None, None], self.key_mlp(slots), k)
        k = k.unflatten(-1, (2, -1))  # (M, Q, 2, H)
        logits = torch.einsum("mch,mqch->mcq", q, k) * self.scale
        return logits.masked_fill(~mask[:, None, :], float("-inf"))

    @staticmethod
    def _on(kinds: tuple[str, ...], audio: torch.Tensor) -> torch.Tensor:
        """Which of the clips (`audio`: (M,) audio, else video) are of the `kinds` an option lists."""
        return audio & ("audio" in kinds) | ~audio & ("video" in kinds)

    def loss(self, hidden: torch.Tensor, slots: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
             audio: torch.Tensor, *text: torch.Tensor):
        """Mean over M spans of -log P(first slot) - log P(last slot); target (M, 2) in [0, 1]."""
        logits = self.logits(hidden, slots, mask, audio, *text).float()
        first, last = span_slots(target.float(), mask.sum(1))
        return F.cross_entropy(logits[:, 0], first) + F.cross_entropy(logits[:, 1], last)

    def choose(self, hidden: torch.Tensor, slots: torch.Tensor, mask: torch.Tensor, num_bins: int,
               audio: torch.Tensor, *text: torch.Tensor) -> tuple[list[int], float]:
        """hidden (H,) at a `<|span|>`, one clip's slots (Q, H) and mask (Q,) -> of the slot pairs first <= last,
        weighted by P(first) P(last), the span of highest expected IoU (`agreed_choice`) as two bins, and its
        confidence: the probability of the pairs whose span agrees with it (IoU >= 0.5), as the forced
        tokens' own probability is 1. `audio`: whether the clip is audio (a bool tensor); with reread, `text` is
        the span's text so far (L, H) and its mask (L,). With more heads, each pair's probability averaged."""
        args = (hidden[None], slots[None], mask[None], audio[None], *(t[None] for t in text))
        p = torch.stack([m.logits(*args)[0].float().softmax(-1) for m in self.members()])  # (K, 2, Q)
        nq = int(mask.sum())
        first, last = torch.triu_indices(nq, nq, device=p.device)  # every pair first <= last
        joint = (p[:, 0, first] * p[:, 1, last]).mean(0)
        # spans [first, last + 1] as boxes of height 1, whose IoU is the spans'
        spans = torch.stack([first, torch.zeros_like(first), last + 1, torch.ones_like(first)], -1).float()
        choice, confidence = agreed_choice(joint, spans)
        return span_bins(int(first[choice]), int(last[choice]), nq, num_bins), float(confidence)


# =================================================================================================
# Merge
# =================================================================================================


def merge_media_embeddings(
    input_ids: torch.Tensor, inputs_embeds: torch.Tensor, media: dict[int, torch.Tensor]
) -> torch.Tensor:
    """Write each modality's adapter outputs over its placeholder tokens, in reading order.

    input_ids (B, L); inputs_embeds (B, L, H); media: pad-token id -> features (n_items, K, H) listed
    batch-major, then in text order (what the processor produces).
    """
    for token_id, feats in media.items():
        mask = input_ids == token_id  # (B, L)
        n_slots, n_feats = int(mask.sum()), feats.shape[0] * feats.shape[1]
        if n_slots != n_feats:
            raise ValueError(f"prompt has {n_slots} placeholder tokens (id {token_id}) but media give {n_feats}")
        inputs_embeds = inputs_embeds.masked_scatter(mask.unsqueeze(-1), feats.to(inputs_embeds.dtype))
    return inputs_embeds


# =================================================================================================
# Model
# =================================================================================================


class OmniGroundPreTrainedModel(PreTrainedModel):
    config_class = OmniGroundConfig
    config: OmniGroundConfig
    input_modalities = ("image", "video", "audio", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _skip_keys_device_placement = ["past_key_values"]
    # device_map="auto" keeps each of these whole; the sub-models' own (decoder layers ...) are added by HF.
    _no_split_modules = ["SmallViT", "SmallAudioEncoder", "ImageProjector", "MediaResampler"]

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MediaResampler):
            init.normal_(module.queries, std=0.02)
        elif isinstance(module, SmallViT):
            init.normal_(module.position_embedding, std=0.02)
        elif isinstance(module, LocationPointer):
            for w in (module.out_x, module.out_y, module.in_x, module.in_y):
                init.zeros_(w)
        elif isinstance(module, ZeroLinear):
            module.reset_parameters()  # zero, over the Linear's random init above
        if isinstance(module, (TimestampEmbedding, SmallAudioEncoder)):
            for name, value in module.fixed_buffers().items():
                init.copy_(getattr(module, name), value)


class OmniGroundForCausalLM(OmniGroundPreTrainedModel, GenerationMixin):
    """Encoders (frozen by default) -> adapters -> soft tokens in a causal LM's input embeddings."""

    def __init__(
        self,
        config: OmniGroundConfig,
        language_model: nn.Module | None = None,
        vision_encoder: nn.Module | None = None,
        audio_encoder: nn.Module | None = None,
    ):
        """Sub-models are built from their configs, or passed in already loaded (see `from_backbones`)."""
        super().__init__(config)
        self.language_model = language_model or AutoModelForCausalLM.from_config(config.text_config)
        config.text_config = self.language_model.config  # one object: resizing the vocab updates both
        hidden = config.text_config.hidden_size

        self.vision_tower = VisionTower(config, vision_encoder)
        self.image_projector = ImageProjector(self.vision_tower.hidden_size, hidden)
        r = (config.resampler_hidden_size, hidden)
        self.video_resampler = MediaResampler(
            self.vision_tower.hidden_size, *r, config.video_num_queries, config.resampler_num_layers,
            config.resampler_num_heads, config.time_anchored_queries,
        )
        self.audio_encoder = AudioEncoder(config, audio_encoder)
        self.audio_resampler = MediaResampler(
            self.audio_encoder.hidden_size, *r, config.audio_num_queries, config.resampler_num_layers,
            config.resampler_num_heads, config.time_anchored_queries,
        )
        self.location_pointer = None
        if config.location_pointer:
            if config.num_location_bins <= 0:
                raise ValueError("location_pointer needs num_location_bins > 0 (the <loc_k> tokens it ties)")
            self.location_pointer = LocationPointer(hidden, config.num_location_bins)
        self._pointer_feats = None  # (X, Y) of the current generate() batch, kept past the prefill step
        self.region_pointer = None
        if config.region_boxes:
            if config.num_location_bins <= 0 or config.location_pointer:
                raise ValueError("region_boxes needs num_location_bins > 0 and no location_pointer")
            self.region_pointer = RegionPointer(self.vision_tower.hidden_size, hidden, config.region_presence,
                                                config.region_reread, config.region_heads)
        if config.region_presence and self.region_pointer is None:
            raise ValueError("region_presence needs region_boxes (it is the region pointer's 'nothing here')")
        if config.region_reread and self.region_pointer is None:
            raise ValueError("region_reread needs region_boxes (it is how the region pointer's query reads the text)")
        if config.region_heads != 1 and (self.region_pointer is None or config.region_heads < 1):
            raise ValueError(f"region_heads {config.region_heads}: needs region_boxes and at least one head")
        self.span_pointer = None
        if config.span_pointers:
            if config.num_location_bins <= 0 or config.location_pointer or not config.time_anchored_queries:
                raise ValueError("span_pointers needs num_location_bins > 0, time_anchored_queries and no "
                                 "location_pointer")
            self.span_pointer = SpanPointer(hidden, config.span_reread, config.span_key_mlp, config.span_heads)
        if (config.span_reread or config.span_key_mlp) and self.span_pointer is None:
            raise ValueError("span_reread and span_key_mlp need span_pointers (they are parts of the span pointer)")
        if config.span_heads != 1 and (self.span_pointer is None or config.span_heads < 1):
            raise ValueError(f"span_heads {config.span_heads}: needs span_pointers and at least one head")
        self._pointing = None  # the current generate() batch's region patches/boxes, clip slots, tokens to force
        # `region_mirror`: set by `OmniGround.chat_batch` around generate(); (row, the ids it generated so far,
        # ending in a `<|box|>`) -> `region_view` of that row mirrored, or None where it has no mirrored view
        self.mirror_view: Callable[[int, list[int]], tuple[torch.Tensor, torch.Tensor] | None] | None = None
        self._new_token_hooks: list = []
        # Training forwards run every media branch (on a blank input where the batch has none of that media)
        # and touch every pointer head, adding zero to the loss. Why: FSDP (and ZeRO-3) gathers each sharded
        # module's weights when it runs, and every process must gather the same ones in the same order; a
        # process whose batch has no audio would skip the audio encoder's gathers while the others wait in
        # them. The trainer turns it on under FSDP and DeepSpeed; DDP does not need it.
        self.every_branch = False
        self.post_init()
        # Sub-models passed in already built keep the attention implementation the config asks for
        # (building OmniGroundConfig around their configs resets it to None: no causal mask at all).
        for sub in (self.language_model, self.vision_tower.encoder, self.audio_encoder.encoder):
            if isinstance(sub, PreTrainedModel) and sub.config._attn_implementation is None:
                sub.set_attn_implementation(self.config._attn_implementation)

    # ---- embeddings (delegated to the LM) ----
    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value):
        self.language_model.set_output_embeddings(value)

    # ---- media -> LM-space tokens ----
    def _blank_media(self, like: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...] | torch.Tensor]:
        """One input of each kind of media, as the processor gives it (on `like`'s device, in its dtype): a black
        image, a video of one black frame, one window of silent audio. What `every_branch` runs where a batch
        has none."""
        cfg, s = self.config, self.config.image_size
        one = like.new_ones(1, 1, dtype=torch.float32)
        return {"image": like.new_zeros(1, 3, s, s),
                "video": (like.new_zeros(1, 1, 3, s, s), one.bool(), one * 0, one[0]),
                "audio": (like.new_zeros(1, 1, cfg.num_mel_bins, cfg.audio_frames_per_window), one.bool(), one * 0,
                          one[0] * cfg.audio_window_seconds)}

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(Ni, 3, S, S) -> (Ni, K_image, H)."""
        return self.project_images(self.vision_tower(pixel_values.to(self.vision_dtype)))

    def project_images(self, patches: torch.Tensor) -> torch.Tensor:
        """Vision-tower patches (Ni, P, Dv) -> (Ni, K_image, H)."""
        tokens = self.image_projector(pool_patch_grid(patches, self.config.image_pool))
        if self.config.center_image_tokens:
            tokens = tokens - tokens.mean(1, keepdim=True)
        return tokens

    def encode_videos(self, frames, frame_mask, timestamps, durations) -> torch.Tensor:
        """frames (Nv, F, 3, S, S), frame_mask (Nv, F), timestamps (Nv, F) s, durations (Nv,) -> (Nv, Q_video, H)."""
        frame_mask = frame_mask.bool()
        tokens = self.vision_tower(frames[frame_mask].to(self.vision_dtype))  # (n_frames, P, Dv): real frames only
        tokens = pool_patch_grid(tokens, self.config.video_frame_pool)  # (n_frames, Pf, Dv)
        steps = tokens.new_zeros(*frame_mask.shape, *tokens.shape[1:])  # (Nv, F, Pf, Dv)
        steps[frame_mask] = tokens
        return self.video_resampler(steps, frame_mask, timestamps, durations)

    def encode_audios(self, features, window_mask, starts, durations) -> torch.Tensor:
        """features (Na, W, n_mels, T), window_mask (Na, W), starts (Na, W) s, durations (Na,) -> (Na, Q_audio, H)."""
        window_mask = window_mask.bool()
        tokens = self.audio_encoder(features[window_mask].to(self.audio_dtype))  # (n_windows, k, Da)
        steps = tokens.new_zeros(*window_mask.shape, *tokens.shape[1:])  # (Na, W, k, Da)
        steps[window_mask] = tokens
        return self.audio_resampler(steps, window_mask, starts, durations, self.config.audio_window_seconds)

    @property
    def vision_dtype(self) -> torch.dtype:
        return next(self.vision_tower.parameters()).dtype

    @property
    def audio_dtype(self) -> torch.dtype:
        return next(self.audio_encoder.parameters()).dtype

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        video_pixel_values: torch.Tensor | None = None,
        video_frame_mask: torch.Tensor | None = None,
        video_timestamps: torch.Tensor | None = None,
        video_durations: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_window_mask: torch.Tensor | None = None,
        audio_starts: torch.Tensor | None = None,
        audio_durations: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Text ids (B, L) with media placeholders + the processor's media tensors -> LM output.

        labels (B, L) use -100 on everything but assistant turns; the LM shifts them for next-token loss.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        # generate() hands the cache over as `cache` in newer transformers
        past_key_values = kwargs.pop("cache", None) if past_key_values is None else past_key_values
        prefill = past_key_values is None or past_key_values.get_seq_length() == 0
        if position_ids is None and attention_mask is not None and attention_mask.ndim == 2 and prefill:
            # left padding: positions count real tokens only (generate makes these itself when decoding)
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        if inputs_embeds is None:
            inputs_embeds, image_patches, media = self._embed_inputs(
                input_ids, labels, prefill, pixel_values, video_pixel_values, video_frame_mask, video_timestamps,
                video_durations, audio_features, audio_window_mask, audio_starts, audio_durations)
            if self.location_pointer is not None:
                return self._forward_pointer(
                    input_ids, inputs_embeds, media.get(self.config.image_token_id), prefill,
                    attention_mask=attention_mask, position_ids=position_ids, past_key_values=past_key_values,
                    labels=labels, use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs,
                )
            if self.region_pointer is not None or self.span_pointer is not None:
                return self._forward_pointers(
                    input_ids, inputs_embeds, image_patches, media, prefill,
                    attention_mask=attention_mask, position_ids=position_ids, past_key_values=past_key_values,
                    labels=labels, use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs,
                )

        kwargs[cache_kwarg(type(self.language_model))] = past_key_values
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def _embed_inputs(self, input_ids, labels, prefill, pixel_values=None, video_pixel_values=None,
                      video_frame_mask=None, video_timestamps=None, video_durations=None, audio_features=None,
                      audio_window_mask=None, audio_starts=None, audio_durations=None):
        """Text ids with media placeholders + the media tensors -> the LM's input embeddings (B, L, H), the image
        patch features (Ni, P, Dv) or None, and each kind's media embeddings by placeholder id."""
        inputs_embeds = self.get_input_embeddings()(input_ids)  # (B, L, H)
        media: dict[int, torch.Tensor] = {}
        image_patches = None
        blank: list[int] = []  # `every_branch`: the kinds of media this batch lacks, run on blanks
        if self.every_branch and labels is not None:
            fill = self._blank_media(inputs_embeds)
            if pixel_values is None:
                pixel_values = fill["image"]
                blank.append(self.config.image_token_id)
            if video_pixel_values is None:
                video_pixel_values, video_frame_mask, video_timestamps, video_durations = fill["video"]
                blank.append(self.config.video_token_id)
            if audio_features is None:
                audio_features, audio_window_mask, audio_starts, audio_durations = fill["audio"]
                blank.append(self.config.audio_token_id)
        if pixel_values is not None:
            image_patches = self.vision_tower(pixel_values.to(self.vision_dtype))  # (Ni, P, Dv)
            media[self.config.image_token_id] = self.project_images(image_patches)
        if video_pixel_values is not None:
            media[self.config.video_token_id] = self.encode_videos(
                video_pixel_values, video_frame_mask, video_timestamps, video_durations
            )
        if audio_features is not None:
            media[self.config.audio_token_id] = self.encode_audios(
                audio_features, audio_window_mask, audio_starts, audio_durations
            )
        if blank:  # their outputs enter the loss times zero: every branch gets a (zero) gradient
            idle = sum(media.pop(tid).sum() for tid in blank) * 0.0
            inputs_embeds = inputs_embeds + idle
            if self.config.image_token_id in blank:
                image_patches = None
        if prefill:
            for name, tid in (("image", self.config.image_token_id), ("video", self.config.video_token_id),
                              ("audio", self.config.audio_token_id)):
                if tid not in media and bool((input_ids == tid).any()):
                    raise ValueError(f"prompt has {name} placeholders but no {name} inputs were given")
        inputs_embeds = merge_media_embeddings(input_ids, inputs_embeds, media)
        return inputs_embeds, image_patches, media

    def _forward_pointer(
        self, input_ids, inputs_embeds, image_tokens, prefill, *, attention_mask, position_ids, past_key_values,
        labels, use_cache, logits_to_keep, **kwargs,
    ) -> CausalLMOutputWithPast:
        """The forward pass with `<loc_k>` tied to the image (config.location_pointer): see LocationPointer.

        The bin features come from each row's first image; rows without an image get none. In cached
        generation the media are dropped after prefill, so the features of that step are kept for the
        following ones (`_pointer_feats`).
        """
        pointer, n, start = self.location_pointer, self.config.num_location_bins, self.config.loc_token_start_id
        b, hdim = inputs_embeds.shape[0], inputs_embeds.shape[-1]
        if prefill or self._pointer_feats is None or self._pointer_feats[0].shape[0] != b:
            if image_tokens is not None:
                x, y = pointer.bin_features(image_tokens)  # (Ni, n, H)
                row = first_item_per_row(input_ids, self.config.image_token_id, image_tokens.shape[1])
                has = (row >= 0).to(x.dtype)[:, None, None]
                idx = row.clamp_min(0)
                feats = (x[idx] * has, y[idx] * has)  # (B, n, H)
            else:
                zeros = inputs_embeds.new_zeros(b, n, hdim)
                feats = (zeros, zeros)
            # kept for the decode steps (no graph: a training step must not hold on to the last one's)
            self._pointer_feats = (feats[0].detach(), feats[1].detach()) if use_cache is not False else None
        else:
            feats = self._pointer_feats
        feats = (feats[0].to(inputs_embeds.dtype), feats[1].to(inputs_embeds.dtype))

        is_loc = (input_ids >= start) & (input_ids < start + n)  # (B, L)
        if bool(is_loc.any()):
            table = pointer.input_embeddings(feats)  # (B, n, H)
            k = (input_ids - start).clamp(0, n - 1)
            extra = torch.gather(table, 1, k[..., None].expand(-1, -1, hdim))  # (B, L, H)
            inputs_embeds = inputs_embeds + extra * is_loc[..., None].to(extra.dtype)

        out, hidden, logits = self._decode(inputs_embeds, attention_mask, position_ids, past_key_values, use_cache,
                                           logits_to_keep, **kwargs)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        hidden = hidden[:, keep]
        loc_logits = logits[..., start : start + n] + pointer.logits(hidden, feats).to(logits.dtype)
        logits = torch.cat([logits[..., :start], loc_logits, logits[..., start + n :]], dim=-1)
        loss = None
        if labels is not None:
            loss = self.language_model.loss_function(
                logits=logits, labels=labels, vocab_size=logits.shape[-1], **kwargs
            )
        return self._output(loss, logits, out)

    def _decode(self, inputs_embeds, attention_mask, position_ids, past_key_values, use_cache, logits_to_keep,
                **kwargs):
        """The LM's decoder and head run apart (the pointers need the hidden states): (out, hidden, logits)."""
        decoder = self.language_model.get_decoder()
        kwargs[cache_kwarg(type(decoder))] = past_key_values
        out = decoder(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
            use_cache=use_cache, **kwargs,
        )
        hidden = out.last_hidden_state  # (B, L, H)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        return out, hidden, self.get_output_embeddings()(hidden[:, keep])  # logits (B, L', V)

    @staticmethod
    def _output(loss, logits, out) -> CausalLMOutputWithPast:
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, **{CACHE_FIELD: getattr(out, CACHE_FIELD, None)},
            hidden_states=getattr(out, "hidden_states", None), attentions=getattr(out, "attentions", None),
        )

    def _forward_pointers(
        self, input_ids, inputs_embeds, image_patches, media, prefill, *, attention_mask, position_ids,
        past_key_values, labels, use_cache, logits_to_keep, **kwargs,
    ) -> CausalLMOutputWithPast:
        """The forward pass with boxes and/or spans as pointers (config.region_boxes / span_pointers): see
        RegionPointer and SpanPointer.

        With labels (training): the LM loss + each pointer's loss at every `<|box|>` / `<|span|>` whose
        location tokens are targets, on the row's first image / its clip. Without (generation): wherever the
        model is to write a box on an image or a span on a clip, its next tokens are forced to the pointed
        box / span; what the prefill step saw (patch features and boxes, clip slots), and the tokens still to
        write, are kept for the decode steps.
        """
        cfg = self.config
        n, start = cfg.num_location_bins, cfg.loc_token_start_id
        regions = clips = None
        if self.region_pointer is not None and image_patches is not None:
            row = first_item_per_row(input_ids, cfg.image_token_id, cfg.num_image_tokens)
            idx = row.clamp_min(0)
            regions = (image_patches[idx], self.region_pointer.boxes(image_patches)[idx],
                       row >= 0)  # patches (B, P, Dv), boxes (B, P, 4), has (B,)
        if self.span_pointer is not None:
            clips = self._clip_slots(input_ids, media)
        out, hidden, logits = self._decode(inputs_embeds, attention_mask, position_ids, past_key_values, use_cache,
                                           logits_to_keep, **kwargs)
        loss = None
        if labels is not None:
            loss = self.language_model.loss_function(logits=logits, labels=labels, vocab_size=logits.shape[-1],
                                                     **kwargs)
            is_text = self._is_text(input_ids, attention_mask)  # what either pointer's reread re-reads
            if regions is not None:
                patches, boxes, has = regions
                rows, pos, target = marked_locations(input_ids, labels, cfg.box_token_id, start, n, 4)
                rows, pos, target = rows[has[rows]], pos[has[rows]], target[has[rows]]
                if len(rows):
                    text = () if self.region_pointer.reread is None else text_before(hidden, is_text, rows, pos)
                    args = (hidden[rows, pos], patches[rows], boxes[rows], target.to(hidden.dtype), *text)
                    loss = loss + sum(head.loss(*args) for head in self.region_pointer.members())
            if clips is not None:
                slots, mask, audio = clips
                rows, pos, target = marked_locations(input_ids, labels, cfg.span_token_id, start, n, 2)
                has = mask.any(1)[rows]
                rows, pos, target = rows[has], pos[has], target[has]
                if len(rows):
                    text = () if self.span_pointer.reread is None else text_before(hidden, is_text, rows, pos)
                    args = (hidden[rows, pos], slots[rows], mask[rows], target, audio[rows], *text)
                    loss = loss + sum(head.loss(*args) for head in self.span_pointer.members())
            if self.every_branch:  # a batch without boxes or spans leaves a head unused: a zero gradient instead
                heads = (h for h in (self.region_pointer, self.span_pointer) if h is not None)
                loss = loss + sum(p.sum() for h in heads for p in h.parameters() if p.requires_grad) * 0.0
        else:
            self._force_pointed_tokens(input_ids, hidden, logits, regions, clips, prefill, attention_mask)
        return self._output(loss, logits, out)

    def _is_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T) bool: the real tokens that are not media placeholders (what a pointer's reread re-reads)."""
        cfg = self.config
        media = torch.tensor([cfg.image_token_id, cfg.video_token_id, cfg.audio_token_id], device=input_ids.device)
        is_text = ~torch.isin(input_ids, media)
        return is_text if attention_mask is None else is_text & attention_mask[:, -input_ids.shape[1]:].bool()

    def _clip_slots(self, input_ids, media) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Each row's clip as time slots -- its first video, else its first audio: the resampler's outputs
        (B, Q, H), Q the larger of the two kinds' query counts, a mask (B, Q) of the real ones (none for a row
        without a clip) and whether it is audio (B,). None when the batch has no clip."""
        cfg = self.config
        found = [(media[tid], first_item_per_row(input_ids, tid, media[tid].shape[1]), tid == cfg.audio_token_id)
                 for tid in (cfg.audio_token_id, cfg.video_token_id) if tid in media]
        if not found:
            return None
        b, nq = input_ids.shape[0], max(feats.shape[1] for feats, _, _ in found)
        slots = found[0][0].new_zeros(b, nq, found[0][0].shape[-1])
        mask = torch.zeros(b, nq, dtype=torch.bool, device=input_ids.device)
        audio = torch.zeros(b, dtype=torch.bool, device=input_ids.device)
        for feats, row, is_audio in found:  # video last: it wins in a row that has both
            has = row >= 0
            q = feats.shape[1]
            slots[has] = F.pad(feats[row[has]], (0, 0, 0, nq - q))
            mask[has] = torch.arange(nq, device=mask.device) < q
            audio[has] = is_audio
        return slots, mask, audio

    def _force_pointed_tokens(self, input_ids, hidden, logits, regions, clips, prefill, attention_mask=None) -> None:
        """Generation: where a row is to write a box's / span's location tokens, choose them with the pointer
        and force them (the logits of the row's last position become one-hot), one per step. With
        `region_reread` or `span_reread` the text read so far (each step's hidden states of text tokens) is
        kept too."""
        cfg = self.config
        n, start, b = cfg.num_location_bins, cfg.loc_token_start_id, input_ids.shape[0]
        state = self._pointing
        if prefill or state is None or len(state["pending"]) != b:
            detach = lambda ts: None if ts is None else tuple(t.detach() for t in ts)  # noqa: E731
            state = self._pointing = {"regions": detach(regions), "clips": detach(clips),
                                      "pending": [[] for _ in range(b)], "text": [],
                                      "confidences": [{"box": [], "span": []} for _ in range(b)],
                                      "generated": [[] for _ in range(b)]}  # each row's ids after the prompt
        elif self.mirror_view is not None:
            for r in range(b):
                state["generated"][r] += input_ids[r].tolist()
        reread = self.region_pointer is not None and self.region_pointer.reread is not None
        span_reread = self.span_pointer is not None and self.span_pointer.reread is not None
        # each step's (B, T, H) states and (B, T) text mask, joined only when a box or span is chosen
        if reread or span_reread:
            state["text"].append((hidden.detach(), self._is_text(input_ids, attention_mask)))
        for r in range(b):
            todo = state["pending"][r]
            if not todo:
                ids = input_ids[r].tolist()
                if state["regions"] is not None and state["regions"][2][r]:
                    j = written_since(ids, cfg.box_token_id, start, n, 4)
                    if j is not None:  # about to write coordinate j of a box: choose its patch
                        patches, boxes, _ = state["regions"]
                        text = self._text_so_far(state["text"], r, j) if reread else ()
                        probs = self.region_pointer.probabilities(hidden[r, -1 - j][None], patches[r][None],
                                                                  *(t[None] for t in text))
                        candidates = boxes[r][None]
                        # at the marker (not inside a box part-written in the prompt): its mirrored view too
                        if self.mirror_view is not None and j == 0:
                            if (view := self.mirror_view(r, state["generated"][r])) is not None:
                                probs, candidates = with_mirror_view(probs, candidates, *view)
                        (bins,), (conf,) = choose_region(probs, candidates, n)
                        todo[:] = bins[j:]
                        state["confidences"][r]["box"].append(conf)
                if not todo and state["clips"] is not None and state["clips"][1][r].any():
                    j = written_since(ids, cfg.span_token_id, start, n, 2)
                    if j is not None:  # about to write time j of a span: choose its slots
                        slots, mask, audio = state["clips"]
                        text = self._text_so_far(state["text"], r, j) if span_reread else ()
                        bins, conf = self.span_pointer.choose(hidden[r, -1 - j], slots[r], mask[r], n, audio[r], *text)
                        todo[:] = bins[j:]
                        state["confidences"][r]["span"].append(conf)
            if todo:
                forced = torch.full_like(logits[r, -1], float("-inf"))
                forced[start + todo.pop(0)] = 0.0
                logits[r, -1] = forced

    @torch.no_grad()
    def region_view(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **media: Any
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ending in a `<|box|>` marker, with their media (the processor's tensors) -> the region pointer's
        probabilities there, (B, P[+1]) as `RegionPointer.probabilities`, and the boxes of the row's image's
        patches (B, P, 4): one pass without a cache, apart from generate()'s state (`region_mirror` runs it in
        the middle of a generate() call)."""
        position_ids = None if attention_mask is None else (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        embeds, patches, _ = self._embed_inputs(input_ids, None, True, **media)
        _, hidden, _ = self._decode(embeds, attention_mask, position_ids, None, False, 1)
        rows = torch.arange(len(input_ids), device=input_ids.device)
        at = torch.full_like(rows, input_ids.shape[1] - 1)
        text = () if self.region_pointer.reread is None else \
            text_before(hidden, self._is_text(input_ids, attention_mask), rows, at)
        image = first_item_per_row(input_ids, self.config.image_token_id, self.config.num_image_tokens).clamp_min(0)
        probs = self.region_pointer.probabilities(hidden[:, -1], patches[image], *text)
        return probs, self.region_pointer.boxes(patches)[image]

    @staticmethod
    def _text_so_far(steps: list[tuple[torch.Tensor, torch.Tensor]], r: int, j: int) -> tuple[torch.Tensor, ...]:
        """Generation's kept (states, text mask) per step -> row r's text up to its box / span marker, j of
        whose location tokens may follow it: (L, H) and (L,), what a pointer's reread reads."""
        states, is_text = (torch.cat(parts, 1) for parts in zip(*steps))
        at = torch.tensor([states.shape[1] - 1 - j], device=states.device)
        return tuple(t[0] for t in text_before(states, is_text, at.new_tensor([r]), at))

    def pointer_confidences(self) -> list[dict[str, list[float]]] | None:
        """Per row of the last cached generate() call, the confidence of each pointed box and span it wrote,
        in order (`{"box": [..], "span": [..]}`; None without pointers): what such an item's score is, as its
        forced tokens say nothing."""
        return None if self._pointing is None else self._pointing["confidences"]

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        """Media only in the prefill step: afterwards the KV cache already holds them."""
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for name in MEDIA_INPUT_NAMES:
                inputs.pop(name, None)
        return inputs

    # ---- what trains when: the one place that says it ----
    def adapter_modules(self) -> list[nn.Module]:
        extra = [m for m in (self.location_pointer, self.region_pointer, self.span_pointer) if m is not None]
        return [self.image_projector, self.video_resampler, self.audio_resampler, *extra]

    def encoder_modules(self) -> list[nn.Module]:
        return [self.vision_tower, self.audio_encoder]

    def set_stage(self, stage: int, lora=None) -> None:
        """Freeze/unfreeze for a training stage.

        stage 1 (alignment): adapters (MLP, resamplers, their time embeddings) + the rows of the
        embeddings/LM head that omniground added (media, box/span, location tokens).
        stages 2-3: the same + the LM, fully, or through LoRA when `lora` (a peft `LoraConfig`) is given.
        Encoders train only when `config.train_encoders` (the tiny default has no pretrained encoder).
        Frozen embedding rows get zero gradient, not zero update: train with `parameter_groups`, which
        keeps weight decay off the embeddings.
        """
        if stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, got {stage}")
        if lora is not None and stage == 1:
            raise ValueError("stage 1 trains the adapters only: LoRA on the LM starts at stage 2")
        self.requires_grad_(False)
        for h in self._new_token_hooks:
            h.remove()
        self._new_token_hooks = []
        for m in self.adapter_modules():
            m.requires_grad_(True)
        if self.config.train_encoders:
            for m in self.encoder_modules():
                m.requires_grad_(True)
        elif self.region_pointer is not None:  # its box regressor belongs with the encoders (stage 0)
            self.region_pointer.box.requires_grad_(False)
        if stage >= 2 and lora is None:
            self.language_model.requires_grad_(True)
            return
        if lora is not None:
            from peft import inject_adapter_in_model

            if not any("lora_" in n for n, _ in self.language_model.named_parameters()):
                inject_adapter_in_model(lora, self.language_model)
            for n, p in self.language_model.named_parameters():
                p.requires_grad_("lora_" in n)
        self._train_new_token_rows()

    def _vocab_weights(self) -> list[nn.Parameter]:
        """The input embeddings' and LM head's weights, once each (one when tied): the rows omniground's tokens add."""
        return list({id(m.weight): m.weight for m in (self.get_input_embeddings(), self.get_output_embeddings())
                     if m is not None}.values())

    def parameter_groups(self, weight_decay: float = 0.0) -> list[dict]:
        """Trainable parameters as optimizer groups: weight matrices decay; biases, norms and embeddings do not.

        Embedding rows frozen by `set_stage` (hooked to zero gradient) must not decay either, or AdamW
        would shrink the pretrained vocabulary while "frozen".
        """
        embeddings = {id(w) for w in self._vocab_weights()}
        decay, no_decay, seen = [], [], set()
        for _, p in self.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if p.ndim < 2 or id(p) in embeddings else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def _train_new_token_rows(self) -> None:
        """Let only omniground's added rows of the (frozen) embeddings and LM head learn."""
        start = self.config.new_token_start_id
        if start < 0:
            return
        for w in self._vocab_weights():
            w.requires_grad_(True)

            def keep_new_rows(grad, start=start):
                grad = grad.clone()
                grad[:start] = 0
                return grad

            self._new_token_hooks.append(w.register_hook(keep_new_rows))

    @torch.no_grad()
    def keep_new_row_grads(self) -> None:
        """Zero the gradient of the embedding and LM-head rows `set_stage` froze (all but omniground's added ones),
        as its gradient hooks do. Why: under FSDP the parameters those hooks sit on are replaced by sharded ones
        and the hooks never run; the trainer calls this after each backward there. Sharded gradients (DTensor)
        are masked shard by shard."""
        start = self.config.new_token_start_id
        if not self._new_token_hooks or start < 0:
            return
        for w in self._vocab_weights():
            grad = w.grad
            if grad is None:
                continue
            keep = (torch.arange(grad.shape[0], device=grad.device) >= start).to(grad.dtype)[:, None]  # (V, 1)
            if hasattr(grad, "device_mesh"):  # a DTensor: the mask sharded as the gradient is
                from torch.distributed.tensor import distribute_tensor

                keep = distribute_tensor(keep, grad.device_mesh, grad.placements)
            grad.mul_(keep)

    def merge_lora(self) -> None:
        """Fold LoRA weights into the LM so the model saves and loads as a plain checkpoint."""
        from peft.tuners.lora import LoraLayer

        for name, module in list(self.language_model.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent_name, _, child = name.rpartition(".")
                parent = self.language_model.get_submodule(parent_name) if parent_name else self.language_model
                setattr(parent, child, module.get_base_layer())

    @torch.no_grad()
    def init_location_embeddings(self) -> None:
        """Give `<loc_k>` rows an embedding of the position k stands for (sinusoids of k/(n-1)).

        Neighbouring bins then start close and far bins apart, so the LM need not discover the order
        of 32+ unrelated new tokens from scratch (plain digits did not learn on CPU: feasibility.md).
        """
        n, start = self.config.num_location_bins, self.config.loc_token_start_id
        if n <= 0 or start < 0:
            return
        for emb in self._vocab_weights():
            dim = emb.shape[1]
            pos = torch.linspace(0, 1, n)[:, None] * (n - 1)  # (n, 1) bin index
            freqs = torch.exp(-math.log(4 * n) * torch.arange(dim // 2) / max(1, dim // 2 - 1))  # (dim/2,)
            table = torch.zeros(n, dim)
            table[:, 0 : 2 * (dim // 2) : 2] = (pos * freqs).sin()
            table[:, 1 : 2 * (dim // 2) : 2] = (pos * freqs).cos()
            scale = emb[:start].float().std().clamp_min(1e-4)  # match the existing rows' spread
            emb[start : start + n] = (table * scale).to(emb.dtype)

    def reset_encoder_counters(self) -> None:
        for m in self.encoder_modules():
            m.num_calls = m.num_items = 0


AutoModelForCausalLM.register(OmniGroundConfig, OmniGroundForCausalLM, exist_ok=True)
