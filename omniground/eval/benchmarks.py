"""Evaluation sets: public benchmark releases read through the data engine's converters, and our
generated benchmark (in-distribution and unseen-combination splits) made with the synth generator.

A public benchmark is converted once into `<out>/benchmark.jsonl` (plus the converter's report),
restricted to the protocol's splits, and then scored like any schema JSONL, so a user's number and
ours come from the same samples by construction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from omniground.data.schema import Sample, read_jsonl, write_jsonl
from omniground.errors import UserError
from omniground.eval.heldout import BENCH_SEED, EVAL_SPLITS


class BenchmarkError(UserError):
    """A benchmark cannot be prepared from what was given: one line for the user."""


@dataclass(frozen=True)
class Benchmark:
    format: str  # converter in omniground.data.formats
    splits: tuple[str, ...]  # the splits the literature reports, each a table of its own
    ann: str  # what --ann is
    protocol: str  # the metric as papers print it


BENCHMARKS: dict[str, Benchmark] = {
    "refcoco": Benchmark("refcoco", ("val", "testA", "testB"), "refcoco/ folder (refs(unc).p + instances.json)",
                         "REC Acc@0.5 of the top-1 box per referring sentence (UNC splits)"),
    "refcoco+": Benchmark("refcoco+", ("val", "testA", "testB"), "refcoco+/ folder (refs(unc).p + instances.json)",
                          "REC Acc@0.5 per sentence (UNC splits)"),
    "refcocog": Benchmark("refcocog", ("val", "test"), "refcocog/ folder (refs(umd).p + instances.json)",
                          "REC Acc@0.5 per sentence (UMD splits)"),
    "charades_sta": Benchmark("charades_sta", ("test",), "charades_sta_test.txt",
                              "R@1 at IoU 0.3/0.5/0.7 and mIoU over the 3720 test queries"),
    "qvhighlights": Benchmark("qvhighlights", ("val",), "highlight_val_release.jsonl",
                              "R@1 at IoU 0.3/0.5/0.7 and mIoU against the first relevant window"),
    "activitynet_captions": Benchmark("activitynet_captions", ("val",), "val_1.json or val_2.json (say which)",
                                      "R@1 at IoU 0.3/0.5/0.7 and mIoU per sentence (papers use val_1, val_2 or both)"),
    "didemo": Benchmark("didemo", ("test",), "test_data.json",
                        "R@1/R@5 at IoU and mIoU against the annotators' consensus segment (the official "
                        "DiDeMo script ranks its 21 fixed segments against all annotators: not the same number)"),
    "vggss": Benchmark("vggss", ("test",), "vggss.json (frames/ and audio/ under --media-root)",
                       "Acc@0.5 of the sounding object's first box (VGG-SS is one test set)"),
}
ALIASES = {"charades": "charades_sta", "charades-sta": "charades_sta", "qvh": "qvhighlights",
           "activitynet": "activitynet_captions", "anet": "activitynet_captions"}


def resolve(name: str) -> str:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return key


def prepare_public(
    name: str,
    ann: Sequence[Path],
    media_root: Path,
    out_dir: Path,
    splits: Sequence[str] | None = None,
    durations: Path | None = None,
) -> tuple[Path, list[str]]:
    """Convert a public release into `<out_dir>/benchmark.jsonl` holding only the protocol's splits.

    Returns the JSONL and notes for the report (converter counts, missing media, splits kept).
    """
    from omniground.data.formats import FormatError, convert

    key = resolve(name)
    bench = BENCHMARKS[key]
    splits = tuple(splits or bench.splits)
    out_dir.mkdir(parents=True, exist_ok=True)
    converted = out_dir / "converted.jsonl"
    try:
        report = convert(bench.format, ann, media_root, converted, durations=durations, progress=True)
    except FormatError as e:
        raise BenchmarkError(f"{key}: {e}") from e
    samples = [s for s in read_jsonl(converted) if s.split in splits]
    if not samples:
        found = sorted({s.split for s in read_jsonl(converted)})
        raise BenchmarkError(f"{key}: no sample in split(s) {', '.join(splits)} (the files hold: "
                             f"{', '.join(found) or 'nothing usable'})")
    path = out_dir / "benchmark.jsonl"
    write_jsonl(path, samples)
    converted.unlink()
    (out_dir / "convert_report.json").write_text(json.dumps(report.as_dict(), indent=2))
    notes = [f"benchmark: {key} ({bench.protocol}); splits {', '.join(splits)}: {len(samples)} samples",
             f"converter: {report.converted} samples, skipped {dict(report.skipped) or 'none'}, "
             f"missing media files {report.missing_media}"]
    return path, notes


def prepare_generated(
    out_dir: Path,
    n: int,
    modalities: Sequence[str] = ("image", "video", "audio"),
    workers: int = 1,
    seed: int = BENCH_SEED,
) -> tuple[Path, list[str]]:
    """Generate the held-out benchmark: `test` (in distribution) and `unseen` (held-out combinations).

    Both come from a reserved seed (omniground.eval.heldout) that training refuses; an existing
    complete set with the same parameters is reused, so a re-run (or a resumed one) costs nothing.
    """
    from omniground.data.synth import build
    from omniground.data.synth.config import SynthConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"n": n, "modalities": list(modalities), "seed": seed, "splits": list(EVAL_SPLITS)}
    stamp = out_dir / "params.json"
    path = out_dir / "benchmark.jsonl"
    if not (path.exists() and stamp.exists() and json.loads(stamp.read_text()) == params):
        samples: list[Sample] = []
        for split in EVAL_SPLITS:
            bad = set(modalities) - {"image", "video", "audio"}
            if bad or not modalities:
                got = ",".join(modalities)
                raise BenchmarkError(f"--modalities takes a comma list of image, video, audio, got {got!r}")
            # Stage 2 only: the grounding tasks, each with a metric (captions and free dialogue have none here).
            cfg = SynthConfig(out=out_dir, counts={m: n for m in modalities}, seed=seed, split=split, workers=workers,
                              stages=(2,))
            report = build.run(cfg)
            samples += list(read_jsonl(report.path))
        write_jsonl(path, samples)
        stamp.write_text(json.dumps(params))
    notes = [f"generated benchmark: seed {seed} (reserved for evaluation), {n} samples per modality and split; "
             f"split 'test' is in distribution, 'unseen' holds combinations never generated for training"]
    return path, notes
