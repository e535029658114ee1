"""Training throughput (samples/s) of each stage of the omniground-tiny recipe on this machine.

    python benchmarks/bench_train.py [--steps 8] [--threads 1] [--every-branch] [--stages 0 1 2 3 pointers]
        [--model configs/omniground-small/stage0.yaml]

Runs a few optimizer steps of each stage's config (configs/omniground-tiny/stage{0,1,2,3}.yaml) from a
fresh tiny model (encoders frozen after stage 0, as in the recipe), on the generated data those configs
name (scripts/make_default_data.sh; stage 0 on 640 images and 200 clips). The first step is a warm-up
and is not counted. Prints one line per stage (stage 0: per branch, items = images or audio windows),
then the pointer refit (configs/omniground-tiny/pointers.yaml) on the shipped model: how fast it reads
samples through the frozen model, and how fast each head then fits. `--every-branch` runs stages 1-3 as under
FSDP / DeepSpeed (every media branch and pointer head on every step, `every_branch`): what that costs.
`--model` takes stage 0 and the starting model from another stage-0 config: omniground-small's (SmolLM2-135M
+ Whisper base, from PyPI packages) gives the bigger variant's figures beside the tiny one's (no pointer
refit: it needs a trained model).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", type=Path, default=Path("configs/omniground-tiny"))
    ap.add_argument("--every-branch", action="store_true", help="stages 1-3 as the trainer runs them under FSDP")
    ap.add_argument("--stages", nargs="+", default=["0", "1", "2", "3", "pointers"])
    ap.add_argument("--model", type=Path, help="stage-0 config to start from (default: <configs>/stage0.yaml)")
    args = ap.parse_args()
    stage0_path = args.model or args.configs / "stage0.yaml"
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    from rich.console import Console

    from omniground.train import Trainer, load_config

    from omniground.train.encoders import pretrain_encoders
    from omniground.train.pointers import refit_pointers

    quiet = Console(quiet=True)
    print(f"torch {torch.__version__}, {args.threads} thread(s), cuda={torch.cuda.is_available()}")
    stage0 = load_config(stage0_path)
    train_path = str(stage0.train_data[0].path)  # the generated training set, for stage 0 and the refit
    if "0" in args.stages:
        with tempfile.TemporaryDirectory() as tmp:
            data = [{"path": train_path, "tasks": ["rec"], "limit": 640},
                    {"path": train_path, "tasks": ["audio_grounding"], "limit": 200}]
            cfg = load_config(stage0_path, {"output_dir": tmp, "max_steps": args.steps + 1, "steps": {},
                                            "eval_data": [], "train_data": data, "num_threads": args.threads})
            history = pretrain_encoders(cfg, console=quiet)["history"]
            for branch in dict.fromkeys(r["branch"] for r in history):
                rows = [r for r in history if r["branch"] == branch]
                dt = rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]  # the first step is the warm-up
                kind = "images" if branch == "image" else "audio windows"
                print(f"stage 0 {branch}: {cfg.batch_size * args.steps / dt:6.1f} {kind}/s  ({args.steps} steps x "
                      f"{cfg.batch_size}, {dt / args.steps:.2f} s/step)")
    for stage in (1, 2, 3):
        if str(stage) not in args.stages:
            continue
        path = args.configs / f"stage{stage}.yaml"
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(path, {"output_dir": tmp, "max_steps": args.steps + 1, "eval_data": [], "eval_every": 0,
                                     "save_every": 0, "num_threads": args.threads})
            init = {k: getattr(stage0.model, k) for k in ("tiny", "backbones")}
            kind = "tiny" if init["tiny"] is not None else "backbones"
            init[kind] = {**init[kind], "train_encoders": not stage0.freeze_after}
            cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"from_checkpoint": None, **init})})
            trainer = Trainer(cfg, console=quiet)
            trainer.og.model.every_branch = args.every_branch or trainer.sharded
            trainer.train(stop_after=1)  # warm-up: first batch, allocator, media cache
            t0, c0, seen = time.perf_counter(), time.process_time(), trainer.samples_seen
            trainer.train(stop_after=args.steps + 1)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            n = trainer.samples_seen - seen
            sps = n / dt
            trainable = sum(p.numel() for p in trainer.trainable) / 1e6
            every = ", every branch" if trainer.og.model.every_branch else ""
            print(f"stage {stage}: {sps:6.2f} samples/s  ({args.steps} steps x {cfg.batch_size * cfg.grad_accum} "
                  f"samples{every}, {dt / args.steps:.2f} s/step; {n / cpu:.2f} samples per CPU-second, "
                  f"{trainable:.2f}M trainable, {len(trainer.train_set)} samples)")
    # the pointer refit, on the shipped model: one forward pass over the data, then many cheap head steps
    if "pointers" in args.stages and stage0.model.tiny is not None:
        with tempfile.TemporaryDirectory() as tmp:
            data = [{"path": train_path, "tasks": ["rec"], "limit": 256},
                    {"path": train_path, "tasks": ["video_grounding", "audio_grounding"], "limit": 128}]
            cfg = load_config(args.configs / "pointers.yaml", {
                "output_dir": tmp, "model": {"from_checkpoint": "omniground-tiny"}, "train_data": data,
                "eval_data": [], "max_steps": 50 * args.steps, "steps": {}, "num_threads": args.threads})
            s = refit_pointers(cfg, console=quiet)
            fits = ", ".join(f"{name} {f['heads'] * f['steps'] * cfg.batch_size / f['fit_seconds']:.0f} examples/s"
                             f" ({f['heads']} head{'s' * (f['heads'] > 1)})" for name, f in s["heads"].items())
            print(f"pointers: reading {s['samples'] / s['capture_seconds']:6.2f} samples/s through the frozen model "
                  f"({s['samples']} samples); fitting the heads: {fits} ({50 * args.steps} steps x {cfg.batch_size})")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: wall-clock figures shrink when shared")


if __name__ == "__main__":
    main()
