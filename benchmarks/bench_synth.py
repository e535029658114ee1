"""Generation throughput of `omniground data synth`: samples/s per modality, media sizes, for 1 and 2 workers.

    python benchmarks/bench_synth.py [--n 24] [--workers 1,2]

Asset caches (sprites, synthesised speech) are filled first, as they are a few minutes into a long run.
Two presets: "small" (the CPU default model's data: 64 px images, 2-8 s clips at 4-8 fps) and
"default" (the generator's defaults: 384 px images, 160 px clips of 4-20 s at 6-24 fps).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

from omniground.data.synth import assets
from omniground.data.synth.audio import PHRASES
from omniground.data.synth.build import run
from omniground.data.synth.config import SynthConfig

PRESETS = {
    "small": dict(image_size=64, video_size=64, video_seconds=(2.0, 8.0), fps=(4, 6, 8), audio_seconds=(3.0, 8.0)),
    "default": dict(),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="samples per modality and run")
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    print(f"{'preset':8} {'modality':8} {'workers':>7} {'samples/s':>10} {'KiB/sample':>10}")
    for preset, sizes in PRESETS.items():
        for modality in ("image", "video", "audio"):
            if modality == "audio":  # every (phrase, voice, speed) espeak-ng makes, as a long run ends up with
                for text, voice, speed in itertools.product(PHRASES, assets.ESPEAK_VOICES, assets.ESPEAK_SPEEDS):
                    assets.speech(text, voice, speed)
            warm = {m: (8 if m == modality else 0) for m in ("image", "video", "audio")}
            with tempfile.TemporaryDirectory() as tmp:  # fill the per-process asset caches (sprites, speech)
                run(SynthConfig(out=Path(tmp), counts=warm, seed=99, **sizes), progress=False)
            for workers in (int(w) for w in args.workers.split(",")):
                with tempfile.TemporaryDirectory() as tmp:
                    counts = {m: (args.n if m == modality else 0) for m in ("image", "video", "audio")}
                    cfg = SynthConfig(out=Path(tmp), counts=counts, seed=0, workers=workers, **sizes)
                    report = run(cfg, progress=False)
                    media = sum(p.stat().st_size for p in (Path(tmp) / "media").rglob("*") if p.is_file())
                    rate = report.total / report.seconds
                    print(
                        f"{preset:8} {modality:8} {workers:>7} {rate:>10.1f} {media / 1024 / report.total:>10.1f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
