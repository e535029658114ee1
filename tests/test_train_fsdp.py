"""FSDP: the shipped accelerate configs say what they launch, and the model trains sharded -- each process
runs every media branch and pointer head, so processes whose batches hold different media stay in step, and
the embedding rows a stage freezes stay frozen (their gradient hooks do not survive sharding)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fsdp_worker import BATCHES, LORA, MODEL, launch_args
from micro import labelled_batch, micro_model
from peft import LoraConfig
from safetensors.torch import load_file
from test_train_ddp import _free_port

CONFIGS = Path(__file__).parent.parent / "configs" / "accelerate"


def test_the_shipped_accelerate_configs_launch_fsdp2_and_zero2():
    fsdp = launch_args(str(CONFIGS / "fsdp.yaml"))
    assert fsdp.use_fsdp and int(fsdp.fsdp_version) == 2 and fsdp.fsdp_auto_wrap_policy == "TRANSFORMER_BASED_WRAP"
    assert fsdp.fsdp_state_dict_type == "FULL_STATE_DICT" and fsdp.mixed_precision == "bf16"
    zero = launch_args(str(CONFIGS / "zero2.yaml"))
    assert zero.use_deepspeed and int(zero.zero_stage) == 2 and not zero.use_fsdp


def test_every_branch_adds_zero_and_gives_the_branches_a_batch_lacks_a_gradient():
    og = micro_model(**MODEL)
    m = og.model
    m.set_stage(2)
    inputs = labelled_batch(og, *BATCHES[0])  # an image with a box: no video, no audio, no span
    plain = m(**inputs).loss
    plain.backward()
    idle = (m.audio_encoder, m.audio_resampler, m.video_resampler, m.span_pointer)
    assert all(p.grad is None for part in idle for p in part.parameters())
    m.zero_grad(set_to_none=True)
    m.every_branch = True
    every = m(**inputs).loss
    assert torch.equal(every, plain)
    every.backward()
    assert all(p.grad is not None and not p.grad.any() for part in idle for p in part.parameters() if p.requires_grad)
    assert m.region_pointer.query[1].weight.grad.any()  # what the batch does use learns as before
    with torch.no_grad():
        assert m(**{k: v for k, v in inputs.items() if k != "labels"}).loss is None  # generation: untouched


def test_keep_new_row_grads_zeroes_the_frozen_rows_as_the_hooks_do():
    og = micro_model(**MODEL)
    m = og.model
    m.set_stage(1)  # the LM frozen but for omniground's added token rows
    start = m.config.new_token_start_id
    w = m.get_input_embeddings().weight
    w.grad = torch.ones_like(w)  # what a backward whose hooks never ran would leave
    m.keep_new_row_grads()
    assert not w.grad[:start].any() and bool((w.grad[start:] == 1).all())
    m.set_stage(2)  # the whole LM trains: nothing to mask
    w.grad = torch.ones_like(w)
    m.keep_new_row_grads()
    assert bool((w.grad == 1).all())


@pytest.mark.parametrize("precision, lora, atol", [("no", "-", 1e-5), ("bf16", "-", 2e-2), ("no", "lora", 1e-5)])
def test_two_processes_with_different_media_train_sharded_as_one_process_on_both_batches(tmp_path, precision, lora,
                                                                                         atol):
    out = tmp_path / "fsdp.pt"
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         str(Path(__file__).parent / "fsdp_worker.py"), str(CONFIGS / "fsdp.yaml"), str(out), precision, lora],
        check=False, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got = torch.load(out)
    # accelerate sharded the encoders, adapters and decoder layers each on their own
    assert {"FSDPSmallViT", "FSDPSmallAudioEncoder", "FSDPMediaResampler", "FSDPLlamaDecoderLayer"} <= set(got["units"])
    # the same two SGD steps in one process, on the mean of the two batches' losses
    og = micro_model(**MODEL)
    m = og.model
    m.set_stage(2, lora=LoraConfig(**LORA) if lora == "lora" else None)
    start = {k: v.clone() for k, v in m.state_dict().items()}
    batches = [labelled_batch(og, *b) for b in BATCHES]
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    losses = []
    for _ in range(2):
        step = [m(**b).loss for b in batches]
        losses.append([x.item() for x in step])
        (sum(step) / 2).backward()
        opt.step()
        opt.zero_grad()
    if lora == "lora":
        m.merge_lora()  # as the trainer does before it saves: a plain checkpoint
    # float32: the same to rounding; bf16 compute (float32 weights, as accelerate sets FSDP2's policy): close
    torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(losses).T, rtol=0, atol=10 * atol)
    want = m.state_dict()
    assert set(got["weights"]) == set(want)
    for k, v in want.items():
        torch.testing.assert_close(got["weights"][k], v, rtol=1e-4, atol=atol, msg=k)
    saved = load_file(f"{out}.model/model.safetensors")  # save_pretrained on the sharded model, as the trainer does
    assert set(saved) == set(want) and all(torch.equal(saved[k], got["weights"][k]) for k in saved)
    assert not torch.equal(want["region_pointer.query.1.weight"], start["region_pointer.query.1.weight"])
    assert not torch.equal(want["span_pointer.query.1.weight"], start["span_pointer.query.1.weight"])
