"""How well a box's score tells a phrase the image lacks from one it shows, asked as `omniground ground` asks.

    python benchmarks/bench_presence.py [--model omniground-tiny] [--data runs/data/synth/test-images/test.jsonl] \
        [--present 300] [--plot presence.png]

Three kinds of phrase on the generated held-out images (made by `scripts/make_default_data.sh`):
present -- a REC sample's phrase on its own image (right when the box is at IoU >= 0.5);
absent -- a negative sample's phrase, which the generator made sure no object of the image matches;
swapped -- a present phrase asked on another image with no object of that name: worded as present
phrases are, so a score that tells these apart reads the image, not the wording.
Prints AUROC (present vs absent, present vs swapped, right vs wrong boxes) and, per `--min-score`
threshold, the share of right boxes kept and of absent / swapped ones dropped; `--plot` draws those.
Measured figures: configs/omniground-tiny/README.md.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from rich.progress import track

from omniground.grounding.geometry import box_iou

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def auroc(pos: list[float], neg: list[float]) -> float:
    """P(a random positive scores above a random negative), ties half."""
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / max(len(pos) * len(neg), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="omniground-tiny")
    ap.add_argument("--data", type=Path, default=Path("runs/data/synth/test-images/test.jsonl"))
    ap.add_argument("--present", type=int, default=300, help="REC samples asked (each also swapped)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="which other image a swapped phrase is asked on")
    ap.add_argument("--plot", type=Path, help="PNG: right boxes kept and absent ones dropped per threshold")
    ap.add_argument("--json", type=Path, help="every score, for a closer look")
    args = ap.parse_args()

    import omniground

    torch.set_num_threads(args.threads)
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: no such file (scripts/make_default_data.sh makes it)")
    rows = [json.loads(line) for line in args.data.open()]
    path = lambda d: str(args.data.parent / d["media"][0]["path"])  # noqa: E731
    names = lambda d: {o["name"] for o in d["meta"]["scene"]["objects"]}  # noqa: E731
    rec = [d for d in rows if d["task"] == "rec" and "expression" in d["meta"]][: args.present]
    negatives = [d for d in rows if d["task"] == "negative"]
    images = [d for d in rows if len(d["media"]) == 1 and d["media"][0]["type"] == "image" and "scene" in d["meta"]]
    if not rec or not negatives:
        raise SystemExit(f"{args.data}: needs generated REC and negative samples (with their scene metadata)")
    og = omniground.load(args.model)
    rng = random.Random(args.seed)

    def score(d, phrase):
        boxes = og.ground(path(d), phrase)
        return (boxes[0].score if boxes else 0.0), boxes

    present, swapped = [], []
    for d in track(rec, description="present phrases (and swapped)"):
        s, boxes = score(d, d["boxes"][0]["phrase"])
        b = boxes[0] if boxes else None
        right = b is not None and box_iou([b.x1, b.y1, b.x2, b.y2], d["boxes"][0]["box"]) >= 0.5
        present.append((s, right))
        name = d["meta"]["expression"]["name"]
        swapped.append(score(rng.choice([e for e in images if name not in names(e)]), d["boxes"][0]["phrase"])[0])
    absent = [score(d, d["meta"]["absent"])[0] for d in track(negatives, description="absent phrases")]

    scores = [s for s, _ in present]
    right = [s for s, ok in present if ok]
    wrong = [s for s, ok in present if not ok]
    print(f"{args.model}: {len(present)} present phrases (box right {len(right) / len(present):.3f}), "
          f"{len(absent)} absent, {len(swapped)} swapped")
    print(f"AUROC present vs absent {auroc(scores, absent):.3f}, present vs swapped {auroc(scores, swapped):.3f}, "
          f"right vs wrong boxes {auroc(right, wrong):.3f}")
    print("min-score  right kept  present kept  absent dropped  swapped dropped")
    table = []
    for t in THRESHOLDS:
        row = [sum(s >= t for s in right) / max(len(right), 1), sum(s >= t for s in scores) / len(scores),
               sum(s < t for s in absent) / len(absent), sum(s < t for s in swapped) / len(swapped)]
        table.append(row)
        print(f"{t:9.1f}  {row[0]:10.3f}  {row[1]:12.3f}  {row[2]:14.3f}  {row[3]:15.3f}")
    if args.json:
        args.json.write_text(json.dumps({"present": present, "absent": absent, "swapped": swapped}))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for j, label in enumerate(("right boxes kept", "present kept", "absent dropped", "swapped dropped")):
            ax.plot(THRESHOLDS, [r[j] for r in table], marker="o", label=label)
        ax.set(xlabel="--min-score", ylabel="share", ylim=(0, 1.02), title=f"{args.model}: is it there?")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"saved {args.plot}")


if __name__ == "__main__":
    main()
