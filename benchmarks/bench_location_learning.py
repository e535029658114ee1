"""Which change makes REC learnable on CPU: `<loc_k>` tied to the image (location_pointer) or centred image tokens?

    omniground data synth --out /tmp/ptr_data --split train --seed 11 --images 3000 --videos 0 --audios 0 \
        --stages 2 --image-size 64 --workers 1
    omniground data synth --out /tmp/ptr_data --split val --seed 12 --images 200 --videos 0 --audios 0 \
        --stages 2 --image-size 64 --workers 1
    OMP_NUM_THREADS=1 python benchmarks/bench_location_learning.py --data /tmp/ptr_data --minutes 35

Tiny models (`build_tiny`, 32 location bins) -- `baseline`, `pointer` (location_pointer=True) and
`centred` (center_image_tokens=True) -- start from the SAME random weights (same seed; the pointer's
maps start at zero) and train on the SAME batches of the synthetic REC samples in the same order, one
step each in turn (so a time budget cuts all at the same step, and all see the same CPU load). Every
`--eval-every` steps each answers the held-out REC prompts greedily through the public `chat_batch`
path (answer text `[x1,y1,x2,y2]`), scored with `omniground.eval.metrics.rec_metrics`. Prints the
curves, writes them as JSON and a PNG figure. Measured figures: configs/omniground-tiny/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

from omniground.data.schema import read_jsonl
from omniground.eval.metrics import rec_metrics
from omniground.grounding import Box
from omniground.model.factory import build_tiny


def load(data: Path, split: str, limit: int | None) -> list:
    samples = [s for s in read_jsonl(data / f"{split}.jsonl") if s.task == "rec" and s.boxes]
    return samples[:limit] if limit else samples


def evaluate(og, samples, root: Path, batch: int = 64, max_new_tokens: int = 32) -> dict:
    og.model.eval()
    preds, gts = [], []
    for i in range(0, len(samples), batch):
        chunk = samples[i : i + batch]
        convs = [[{"role": "user", "content": s.conversation[0].content}] for s in chunk]
        media = [[s.media_path(0, root)] for s in chunk]
        for s, r in zip(chunk, og.chat_batch(convs, media, max_new_tokens=max_new_tokens)):
            preds.append(list(r.boxes)[:1])
            gts.append(Box(*s.boxes[0].box))
    og.model.train()
    return rec_metrics(preds, gts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/tmp/ptr_data"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--minutes", type=float, default=30.0, help="stop both runs after this wall time")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--val", type=int, default=128, help="held-out REC samples per evaluation")
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="baseline,pointer,centred")
    ap.add_argument("--out", type=Path, default=Path("/tmp/ptr_bench"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    train, val = load(args.data, "train", None), load(args.data, "val", args.val)
    variants = args.variants.split(",")
    runs = {}
    for name in variants:
        torch.manual_seed(args.seed)
        og = build_tiny(num_location_bins=args.bins, location_pointer=(name == "pointer"),
                        center_image_tokens=(name == "centred"))
        og.model.set_stage(2)
        og.model.train()
        opt = torch.optim.AdamW(og.model.parameter_groups(0.01), lr=args.lr, betas=(0.9, 0.98))
        n_params = sum(p.numel() for p in og.model.parameters())
        runs[name] = dict(og=og, opt=opt, curve=[], losses=[], train_s=0.0, params=n_params)
    proc = runs[variants[0]]["og"].processor
    examples = [proc.build_training_example(s, args.data) for s in train]
    print(f"{len(examples)} train / {len(val)} val REC samples; batch {args.batch}, lr {args.lr}, "
          f"{args.bins} bins, {torch.get_num_threads()} thread(s)", flush=True)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        return args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, step / args.steps)))

    def do_eval(step: int) -> None:
        for name in variants:
            r = runs[name]
            t = time.time()
            m = evaluate(r["og"], val, args.data)
            loss = sum(r["losses"][-20:]) / max(1, len(r["losses"][-20:]))
            r["curve"].append(dict(step=step, train_s=round(r["train_s"], 1), loss=round(loss, 4), **m))
            print(f"step {step:5d} {name:9s} loss {loss:.3f} acc@0.5 {m['acc@0.5']:.3f} miou {m['miou']:.3f} "
                  f"(train {r['train_s']:.0f}s, eval {time.time() - t:.0f}s)", flush=True)

    rng = random.Random(args.seed)
    order: list[int] = []
    start, step = time.time(), 0
    do_eval(0)
    while step < args.steps and time.time() - start < 60 * args.minutes:
        if len(order) < args.batch:
            order += rng.sample(range(len(examples)), len(examples))
        idx, order = order[: args.batch], order[args.batch :]
        for name in variants:
            r = runs[name]
            batch = proc.collate([examples[i] for i in idx], "right")
            t = time.time()
            for g in r["opt"].param_groups:
                g["lr"] = lr_at(step)
            loss = r["og"].model(**batch).loss
            r["opt"].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(r["og"].model.parameters(), 1.0)
            r["opt"].step()
            r["train_s"] += time.time() - t
            r["losses"].append(float(loss))
        step += 1
        if step % args.eval_every == 0:
            do_eval(step)
    if not runs[variants[0]]["curve"] or runs[variants[0]]["curve"][-1]["step"] != step:
        do_eval(step)

    result = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "wall_s": round(time.time() - start, 1),
        "runs": {n: dict(params=r["params"], train_s=round(r["train_s"], 1), curve=r["curve"]) for n, r in runs.items()},
    }
    (args.out / "curves.json").write_text(json.dumps(result, indent=2))
    print("\nstep   " + "  ".join(f"{n + ' acc@0.5':>17s} {n + ' mIoU':>14s}" for n in variants))
    for i in range(len(runs[variants[0]]["curve"])):
        row = [runs[n]["curve"][i] for n in variants]
        print(f"{row[0]['step']:5d}  " + "  ".join(f"{c['acc@0.5']:17.3f} {c['miou']:14.3f}" for c in row))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for n in variants:
            c = runs[n]["curve"]
            steps = [p["step"] for p in c]
            axes[0].plot(steps, [p["acc@0.5"] for p in c], marker="o", label=n)
            axes[1].plot(steps, [p["miou"] for p in c], marker="o", label=n)
            axes[2].plot(steps, [p["loss"] for p in c], marker="o", label=n)
        for ax, title in zip(axes, ("held-out REC Acc@0.5", "held-out REC mIoU", "train loss (last 20 steps)")):
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"tiny model, synthetic REC, batch {args.batch}, {args.bins} bins, CPU 1 thread")
        fig.tight_layout()
        fig.savefig(args.out / "curves.png", dpi=110)
        print(f"figure: {args.out / 'curves.png'}")
    except ImportError:
        pass
    print(f"curves: {args.out / 'curves.json'}")


if __name__ == "__main__":
    main()
