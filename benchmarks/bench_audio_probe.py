"""What a frozen audio encoder's frames already tell: a linear probe of which sounds are on at each 20 ms.

    python benchmarks/bench_audio_probe.py [--clips 600] [--val-clips 100] [--threads 2]

The labels are stage 0's (omniground.train.encoders.frame_targets: every sound and spoken phrase of the
generated clips, per encoder frame). One linear layer is fitted on the frames of training clips and scored on
held-out ones (val, seed 1), for three encoders on the same 2 s windows:
  whisper-base    OpenAI Whisper base, pretrained, frozen (`packaged:whisper-base`): omniground-small's
  tiny-trained    omniground-tiny's from-scratch encoder after its stage 0 (trained on these labels)
  tiny-random     the same encoder, untrained: what the probe gets from the log-mel alone through noise
Why: omniground-small keeps Whisper frozen (as the original does) and skips audio at stage 0; this says
whether Whisper's frames carry the generated sounds' timing without that.
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def encode(encoder, windows: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """Every window's frames (N, T', D) through an AudioEncoder, in eval mode."""
    encoder.eval()
    with torch.no_grad():
        return torch.cat([encoder.frames(windows[i:i + batch]) for i in range(0, len(windows), batch)])


def probe(train_x, train_y, val_x, val_y, epochs: int = 30, seed: int = 0) -> dict[str, float]:
    """Fit one linear layer (BCE) on frames, return held-out frame precision / recall / F1 at p = 0.5."""
    torch.manual_seed(seed)
    x, y = train_x.flatten(0, 1), train_y.flatten(0, 1)
    mean, std = x.mean(0), x.std(0) + 1e-5
    layer = torch.nn.Linear(x.shape[1], y.shape[1])
    with torch.no_grad():  # start at each label's base rate: most frames have no given sound on
        prior = y.mean(0).clamp(1e-4, 1 - 1e-4)
        layer.bias.copy_(torch.log(prior / (1 - prior)))
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(1024):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(layer((x[idx] - mean) / std), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        on = layer((val_x.flatten(0, 1) - mean) / std) > 0
    truth = val_y.flatten(0, 1) > 0
    hit = (on & truth).sum().item()
    precision, recall = hit / max(1, on.sum().item()), hit / max(1, truth.sum().item())
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / max(1e-9, precision + recall)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=600, help="training clips")
    ap.add_argument("--val-clips", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default="runs/data/synth")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import omniground
    from omniground.model.factory import build_tiny, from_backbones
    from omniground.train.config import DataSource
    from omniground.train.data import load_sources
    from omniground.train.encoders import load_audio_set

    def clips(split: str, n: int):
        """One sample of each of the first `n` distinct clips."""
        first = {}
        for it in load_sources([DataSource(path=f"{args.data}/{split}.jsonl", tasks=["audio_grounding"])]):
            first.setdefault(it.media_paths[0], it)
        return list(first.values())[:n]

    tiny = omniground.load("omniground-tiny")
    small = from_backbones("packaged:smollm2-135m-instruct", audio_model="packaged:whisper-base",
                           audio_window_seconds=2.0)
    torch.manual_seed(0)  # the untrained encoder's draw
    encoders = {
        "whisper-base": (small, small.model.audio_encoder),
        "tiny-trained": (tiny, tiny.model.audio_encoder),
        "tiny-random": (tiny, build_tiny().model.audio_encoder),
    }
    train_items, val_items = clips("train", args.clips), clips("val", args.val_clips)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    sets = {}  # per processor (the two tiny encoders share one): the clips decoded into windows and labels once
    for name, (og, encoder) in encoders.items():
        t0 = time.perf_counter()
        if id(og) not in sets:
            frames = og.model.config.audio_frames_per_window // 2
            train = load_audio_set(train_items, og.processor, frames)
            sets[id(og)] = train, load_audio_set(val_items, og.processor, frames, vocab=train.vocab)
        train, val = sets[id(og)]
        tx, vx = encode(encoder, train.windows), encode(encoder, val.windows)
        dt = time.perf_counter() - t0
        m = probe(tx, train.targets, vx, val.targets)
        print(f"{name:13s} frames {tx.shape[-1]:4d}-d: held-out precision {m['precision']:.3f} "
              f"recall {m['recall']:.3f} F1 {m['f1']:.3f}  ({len(train)} training windows of {len(train_items)} "
              f"clips, {len(val)} held-out, {len(train.vocab)} labels; {dt:.0f} s)")


if __name__ == "__main__":
    main()
