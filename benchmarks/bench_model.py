"""The model's own costs on CPU, on a randomly initialised `tiny_config` model (no checkpoint needed).

    python benchmarks/bench_model.py [--threads 1] [--tokens 32] [--repeats 3]

1. Per-token decode latency (median time between streamed tokens, prefill excluded) with a 64-frame
   video vs an 8-frame video, with the KV cache (media are encoded once, in the prefill: the ratio
   must be <= 1.2) and, for contrast, without it (every step re-runs the encoders, as the original did).
2. Latency and peak memory (RSS high-water mark, and its rise during the first call) of one `ground` call per
   modality, media decoding included: a 640x480 PNG, a 10 s 320x240 video, 30 s of 16 kHz audio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import current_rss_mb, make_media, reset_high_water, rss_high_water_mb

DECODE_RATIO_TARGET = 1.2


class TokenClock:
    """A `generate` streamer that notes when each token arrives: put() #0 is the prompt, #1 the first token."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass

    def decode_steps(self) -> list[float]:
        """Seconds of each decoding step after the first token (prefill excluded)."""
        return [b - a for a, b in zip(self.times[1:], self.times[2:])]


def decode_ms_per_token(og, videos: dict[int, object], tokens: int, use_cache: bool, repeats: int) -> dict[int, float]:
    """Median decode step per frame count; runs interleaved (8, 64, 8, 64 ...) so machine load hits both alike."""
    conv = [{"role": "user", "content": "<video>\nWhat happens?"}]
    inputs = {n: og.processor.prepare([conv], [[v]])[0] for n, v in videos.items()}
    steps: dict[int, list[float]] = {n: [] for n in videos}
    for r in range(repeats + 1):
        for n in videos:
            clock = TokenClock()
            og.model.generate(**inputs[n], max_new_tokens=tokens + 1, min_new_tokens=tokens + 1, do_sample=False,
                              use_cache=use_cache, streamer=clock)
            if r > 0:  # the first round warms up
                steps[n] += clock.decode_steps()
    return {n: 1000 * statistics.median(s) for n, s in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--tokens", type=int, default=32, help="decoded tokens per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from omniground.media import sample_frames
    from omniground.model import build_tiny

    torch.manual_seed(0)
    og = build_tiny()
    og.model.eval()
    params = sum(p.numel() for p in og.model.parameters()) / 1e6
    print(f"model: tiny_config, {params:.1f} M parameters, {args.threads} thread(s), torch {torch.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        media = make_media(Path(tmp), image_size=(640, 480), video_size=(320, 240), video_seconds=10)
        print("\n1. decode latency per token vs video frames (10 s clip)")
        videos = {n: sample_frames(media["video"], n) for n in (8, 64)}
        for use_cache in (True, False):
            ms = decode_ms_per_token(og, videos, args.tokens if use_cache else 4, use_cache, args.repeats)
            a, b = ms[8], ms[64]
            if use_cache:
                verdict = "OK" if b / a <= DECODE_RATIO_TARGET else "FAIL"
                print(f"   KV cache (ours)        8 frames {a:7.2f} ms/token   64 frames {b:7.2f} ms/token   "
                      f"ratio {b / a:5.2f} (target <= {DECODE_RATIO_TARGET}) {verdict}")
            else:
                print(f"   no cache (re-encodes)  8 frames {a:7.2f} ms/token   64 frames {b:7.2f} ms/token   "
                      f"ratio {b / a:5.2f} (the original's way, for contrast)")

        print("\n2. one ground() call per modality (decode + preprocess + encode + generate + parse)")
        phrases = {"image": "the bright square", "video": "the square moves right", "audio": "a hiss"}
        for kind, path in media.items():
            base = current_rss_mb()
            reset_high_water()
            og.ground(path, phrases[kind], max_new_tokens=16)  # the first call: buffers are allocated here
            peak = rss_high_water_mb()
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                og.ground(path, phrases[kind], max_new_tokens=16, min_new_tokens=16)
                times.append(time.perf_counter() - start)
            print(f"   {kind:5s}  median {1000 * statistics.median(times):7.1f} ms (16 new tokens)   "
                  f"peak RSS {peak:6.0f} MB, +{peak - base:5.1f} MB over the process before the call")

if __name__ == "__main__":
    main()
