"""Run the generators: jobs (modality, index) over worker processes, samples streamed to one JSONL.

Layout under --out:
    {split}.jsonl                   one Sample per line, modalities in the order given, indices ascending
    {split}.synth.json              the settings that made it
    media/{image,video,audio}/NNNN/ the media, named by sample id, 1000 per folder; JSONL paths relative to --out
Sample ids are `synth-{split}-s{seed}-{modality}-{index:07d}`. Each sample is a pure function of the
config and its (modality, index), results are written in job order, and nothing is held in memory
but the samples in flight, so a run is byte-identical for any --workers and scales to 100 000+.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from omniground.data.synth import assets
from omniground.data.synth.common import sample_rng
from omniground.data.synth.config import SynthConfig
from omniground.files import atomic_output

_CFG: SynthConfig | None = None  # set once per worker process


@dataclass
class SynthReport:
    path: Path
    counts: Counter = field(default_factory=Counter)  # (modality, task, stage) -> samples
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def sample_id(cfg: SynthConfig, modality: str, index: int) -> str:
    return f"synth-{cfg.split}-s{cfg.seed}-{modality}-{index:07d}"


def make_sample(cfg: SynthConfig, modality: str, index: int):
    """One sample (media written under cfg.out), the same whatever process makes it."""
    from omniground.data.synth.audio import make_audio_sample
    from omniground.data.synth.images import make_image_sample
    from omniground.data.synth.video import make_video_sample

    maker = {"image": make_image_sample, "video": make_video_sample, "audio": make_audio_sample}[modality]
    return maker(sample_rng(cfg.seed, cfg.split, modality, index), sample_id(cfg, modality, index), Path(cfg.out), cfg)


def _init_worker(cfg: SynthConfig) -> None:
    global _CFG
    _CFG = cfg


def _job(job: tuple[str, int]) -> tuple[tuple[str, str, int], str]:
    modality, index = job
    try:
        s = make_sample(_CFG, modality, index)
    except StopIteration as e:  # would end the caller's map/imap loop silently, dropping samples
        raise RuntimeError(f"{sample_id(_CFG, modality, index)}: generator bug: {e!r}") from e
    return (modality, s.task, s.stage), json.dumps(s.model_dump(mode="json"), ensure_ascii=False)


def _jobs(cfg: SynthConfig) -> Iterator[tuple[str, int]]:
    for modality in cfg.modalities:
        for index in range(cfg.counts[modality]):
            yield modality, index


def _progress_bar():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("synth {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn())  # fmt: skip


def run(cfg: SynthConfig, progress: bool = True) -> SynthReport:
    """Generate cfg.counts samples per modality into cfg.out; returns counts and wall time."""
    assets.check_assets(cfg.modalities)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    report = SynthReport(path=out / f"{cfg.split}.jsonl")
    start = time.perf_counter()
    pool = None
    if cfg.workers == 1:
        _init_worker(cfg)
        results = map(_job, _jobs(cfg))
    else:
        pool = multiprocessing.get_context("fork").Pool(cfg.workers, initializer=_init_worker, initargs=(cfg,))
        results = pool.imap(_job, _jobs(cfg), chunksize=2)  # ordered: the file is the same for any --workers
    bar = _progress_bar() if progress else None
    try:
        if bar is not None:
            bar.start()
            bar_task = bar.add_task(cfg.split, total=cfg.total)
        with atomic_output(report.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for key, line in results:
                f.write(line + "\n")
                report.counts[key] += 1
                if bar is not None:
                    bar.advance(bar_task)
    finally:
        if bar is not None:
            bar.stop()
        if pool is not None:
            pool.terminate()
    report.seconds = time.perf_counter() - start
    # What made the file, beside it: re-running with these settings reproduces it byte for byte.
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out", "workers")}  # what, not where
    with atomic_output(out / f"{cfg.split}.synth.json") as tmp:
        tmp.write_text(json.dumps({"config": settings, "samples": report.total}, indent=2))
    return report
