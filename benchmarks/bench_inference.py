"""Inference latency per modality for omniground-tiny (median of many calls) and peak memory.

    python benchmarks/bench_inference.py [--model omniground-tiny] [--threads 1] [--calls 20]

Each call is a whole `OmniGround.ground(path, phrase)` request: media decoding, preprocessing,
encoders, generation and parsing. Media are made here: a 64x48 image, a 30 s 160x120 video at
10 fps, and 30 s of 16 kHz audio. Targets on the 2-core CPU: image <= 150 ms, 30 s video <= 1.5 s,
30 s audio <= 0.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import make_media, rss_high_water_mb

TARGETS_MS = {"image": 150, "video": 1500, "audio": 500}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="omniground-tiny")
    # 1 by default: on the shared 2-core box, 2 threads ran ~10x slower than 1 whenever the other core was busy
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calls", type=int, default=20, help="calls per modality (video: a quarter of them)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import omniground

    t0 = time.perf_counter()
    og = omniground.load(args.model)
    print(f"model {args.model}: loaded in {(time.perf_counter() - t0) * 1000:.0f} ms, "
          f"{sum(p.numel() for p in og.model.parameters()) / 1e6:.1f}M params, {args.threads} thread(s); "
          f"peak RSS after load {rss_high_water_mb():.0f} MB")
    phrases = {"image": "the red square", "video": "the white box moves to the right", "audio": "a beep"}
    with tempfile.TemporaryDirectory() as tmp:
        media = make_media(Path(tmp), image_size=(64, 48), video_size=(160, 120), video_seconds=30)
        for kind in ("image", "video", "audio"):
            calls = max(3, args.calls // 4) if kind == "video" else args.calls
            og.ground(media[kind], phrases[kind], max_new_tokens=args.max_new_tokens)  # warm-up
            times = []
            for _ in range(calls):
                t = time.perf_counter()
                og.ground(media[kind], phrases[kind], max_new_tokens=args.max_new_tokens)
                times.append((time.perf_counter() - t) * 1000)
            med = statistics.median(times)
            ok = "meets" if med <= TARGETS_MS[kind] else "MISSES"
            print(f"{kind:5s}: median {med:7.1f} ms  p90 {np.percentile(times, 90):7.1f} ms over {calls} calls  "
                  f"({ok} target {TARGETS_MS[kind]} ms)  peak RSS {rss_high_water_mb():.0f} MB")


if __name__ == "__main__":
    main()
