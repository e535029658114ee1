"""A 2-process DDP run over gloo on CPU completes, each process taking half of every global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import yaml
from safetensors.torch import load_file
from test_train import MICRO_MODEL, write_tiny_data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_on_cpu_completes(tmp_path):
    data = write_tiny_data(tmp_path / "data", images=8, audios=0, videos=0)
    cfg = dict(stage=2, output_dir=str(tmp_path / "out"), model={"tiny": MICRO_MODEL},
               train_data=[{"path": str(data)}], batch_size=2, max_steps=3, log_every=1, save_every=2,
               num_threads=1, seed=1)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         "-m", "omniground.train", str(tmp_path / "cfg.yaml")],
        check=False, capture_output=True, text=True, timeout=240, env=env,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 3
    assert metrics["samples_seen"] == 3 * 2 * 2  # global batch = batch_size x 2 processes
    # each process saved its own RNG state in the resumable checkpoint
    assert (out / "checkpoints/step-3/random_states_1.pkl").is_file()
    weights = load_file(out / "model/model.safetensors")
    assert weights and all(v.isfinite().all() for v in weights.values())
