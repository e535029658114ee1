"""`omniground eval`: score a checkpoint or an OpenAI-compatible endpoint, and compare results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from omniground.data.schema import BadLine, read_jsonl
from omniground.errors import UserError
from omniground.eval.benchmarks import BENCHMARKS, prepare_generated, prepare_public
from omniground.eval.benchmarks import resolve as _resolve
from omniground.eval.predictors import EndpointError, EndpointPredictor, Predictor

app = typer.Typer(help="Evaluate on grounding benchmarks and compare systems.", no_args_is_help=True)
console = Console()


class EvalError(UserError):
    """A user-facing evaluation error (one line, exit 2)."""


def _predictor(model: Optional[str], endpoint: Optional[str], endpoint_model: Optional[str], api_key: Optional[str],
               box_frame: str, prompt_suffix: str, padded_square: bool = False, answer_start: bool = False,
               check_declines: bool = True) -> Predictor:
    if bool(model) == bool(endpoint):
        raise EvalError("give exactly one of --model PATH or --endpoint URL")
    if box_frame not in ("auto", "norm1", "norm1000", "pixel"):
        raise EvalError(f"--box-frame must be auto, norm1, norm1000 or pixel, not {box_frame!r}")
    if endpoint and answer_start:
        raise EvalError("--answer-start needs --model (an endpoint writes its whole answer)")
    if endpoint:
        if not endpoint_model:
            raise EvalError("--endpoint needs --endpoint-model NAME")
        return EndpointPredictor(endpoint, endpoint_model, api_key, box_frame=box_frame, prompt_suffix=prompt_suffix,
                                 padded_square=padded_square)
    try:
        from omniground.eval.model_predictor import ModelPredictor
    except ImportError as e:
        raise EvalError(f"--model needs omniground.eval.model_predictor ({e}); use --endpoint meanwhile") from e
    return ModelPredictor(model, answer_start=answer_start, check_declines=check_declines)  # type: ignore[arg-type]


def evaluate(data: Path, out: Path, predictor: Predictor, root: Path, notes: list[str], limit: Optional[int] = None,
             batch_size: int = 8, examples: int = 3, tasks: Optional[List[str]] = None) -> Path:
    """Predict (resumable), score, and write the report; the one path every command ends in."""
    from omniground.eval.report import write_report
    from omniground.eval.runner import baseline_scores, predict_all, score

    bad: list[BadLine] = []
    samples = [s for s in read_jsonl(data, bad) if not tasks or s.task in tasks][:limit]
    present = [all(s.media_path(i, root).exists() for i in range(len(s.media))) for s in samples]
    usable = [s for s, ok in zip(samples, present) if ok]
    missing = [s for s, ok in zip(samples, present) if not ok]
    notes = [*notes, f"data: {data} ({len(samples)} samples{', tasks ' + ', '.join(tasks) if tasks else ''})"]
    if bad:
        notes.append(f"{len(bad)} invalid lines skipped (first: line {bad[0].line}: {bad[0].error})")
    if missing:
        notes.append(f"{len(missing)} samples skipped: media file missing (first: {missing[0].media[0].path})")
    for n in notes:
        console.print(f"[yellow]{n}[/yellow]" if "skipped" in n else n)
    if not usable:
        raise EvalError(f"{data}: no sample with its media present (media root: {root})")
    _claim(out, predictor.name, getattr(predictor, "weights", None))
    try:
        preds = predict_all(usable, root, predictor, out / "predictions.jsonl", batch_size=batch_size)
    except EndpointError as e:
        raise EvalError(f"{e} (predictions so far kept in {out / 'predictions.jsonl'}; re-run to resume)") from e
    metrics = score(usable, preds)
    report = write_report(out, predictor.name, metrics, baseline_scores(usable), usable, preds, root, notes,
                          examples=examples)
    _print_metrics(predictor.name, metrics)
    console.print(f"report: {report}")
    return report


def _claim(out: Path, system: str, weights: str | None = None) -> None:
    """Predictions resume from OUT/predictions.jsonl: refuse to mix two systems' answers in one folder -- by
    name, and for a checkpoint also by its weights (a model retrained in place keeps its name)."""
    stamp = out / "system.json"
    if stamp.exists():
        try:
            owner = json.loads(stamp.read_text())
        except ValueError:
            owner = {}
        if owner.get("system") not in (None, system):
            raise EvalError(f"{out} holds predictions of {owner['system']}, not {system}: give another --out")
        if None not in (owner.get("weights"), weights) and owner["weights"] != weights:
            raise EvalError(f"{out} holds predictions of {system} with other weights ({owner['weights']}, now "
                            f"{weights}): the checkpoint changed since; give another --out")
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"system": system, **({"weights": weights} if weights else {})}))


_BENCH_HELP = "; ".join(f"{k}: --ann {b.ann}" for k, b in BENCHMARKS.items())


@app.command("run")
def run(
    out: Path = typer.Option(..., "--out", help="Folder for predictions, metrics.json and report.md."),
    data: Optional[Path] = typer.Option(None, "--data", help="Benchmark JSONL in the omniground schema."),
    benchmark: Optional[str] = typer.Option(
        None, "--benchmark", help=f"A public benchmark read from its release files. {_BENCH_HELP}."),
    ann: Optional[List[Path]] = typer.Option(None, "--ann", help="Annotation file/folder (repeatable)."),
    durations: Optional[Path] = typer.Option(None, help="CSV id -> seconds for absent videos (Charades_v1_test.csv)."),
    split: Optional[List[str]] = typer.Option(None, "--split", help="Only these splits (default: the protocol's)."),
    model: Optional[str] = typer.Option(None, "--model", help="omniground checkpoint (path or name)."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="OpenAI-compatible base URL."),
    endpoint_model: Optional[str] = typer.Option(None, "--endpoint-model", help="Model name at the endpoint."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="OMNIGROUND_EVAL_API_KEY"),
    box_frame: str = typer.Option("auto", help="How the system's numbers > 1 are read: auto, pixel, norm1000."),
    padded_square: bool = typer.Option(
        False, help="The system's boxes are relative to the image padded to a square (original GroundingGPT)."),
    prompt_suffix: str = typer.Option("", help="Text appended to every question (e.g. a format instruction)."),
    answer_start: bool = typer.Option(
        False, help="--model only: each REC answer starts with 'The <phrase>' given, so the model writes only "
                    "the box (Kosmos-2's REC protocol; what `omniground ground` does)."),
    check_declines: bool = typer.Option(
        True, help="--model only: an image answer that declines in words is re-asked with the phrase it declined "
                   "given, and the box kept where the region pointer finds the thing (as `omniground serve` "
                   "answers); with --answer-start, one that writes no box is asked for it; --no-check-declines "
                   "scores the LM's words alone."),
    limit: Optional[int] = typer.Option(None, min=1, help="Evaluate only the first N samples."),
    task: Optional[List[str]] = typer.Option(None, "--task", help="Only samples of this task (repeatable): rec, ..."),
    batch_size: int = typer.Option(8, min=1),
    examples: int = typer.Option(3, min=0, help="Best and worst examples drawn per group (0: none)."),
    media_root: Optional[Path] = typer.Option(
        None, help="The release's images/videos for --benchmark; else the folder --data's paths are relative to."),
) -> None:
    """Score a system on a benchmark: metrics.json + report.md with baselines, IoU histograms, best/worst examples.

    Either --data JSONL (our schema) or --benchmark NAME --ann FILES --media-root DIR (public release,
    converted with the data engine's converters into OUT/benchmark.jsonl). Predictions are appended to
    OUT/predictions.jsonl as they come: re-running the same command resumes.
    """
    if (data is None) == (benchmark is None):
        raise EvalError("give exactly one of --data JSONL or --benchmark NAME")
    if data is not None and not data.is_file():
        raise EvalError(f"{data}: no such benchmark file")
    predictor = _predictor(model, endpoint, endpoint_model, api_key, box_frame, prompt_suffix, padded_square,
                           answer_start, check_declines)
    notes: list[str] = []
    if benchmark is not None:
        if not ann:
            raise EvalError(f"--benchmark {benchmark} needs --ann ({BENCHMARKS[_resolve(benchmark)].ann})")
        if media_root is None:
            raise EvalError("--benchmark needs --media-root (the folder of the release's images or videos)")
        data, notes = prepare_public(benchmark, ann, media_root, out, splits=split, durations=durations)
        root = data.parent
    else:
        root = media_root or data.parent
    evaluate(data, out, predictor, root, notes, limit=limit, batch_size=batch_size, examples=examples, tasks=task)


@app.command("bench")
def bench(
    out: Path = typer.Option(..., "--out", help="Folder for the generated data, predictions and report."),
    model: Optional[str] = typer.Option(None, "--model", help="omniground checkpoint (path or name: omniground-tiny)."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="OpenAI-compatible base URL instead of --model."),
    endpoint_model: Optional[str] = typer.Option(None, "--endpoint-model", help="Model name at the endpoint."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="OMNIGROUND_EVAL_API_KEY"),
    n: int = typer.Option(50, min=1, help="Samples per modality in each split (test and unseen)."),
    modalities: str = typer.Option("image,video,audio", help="Comma list of image, video, audio."),
    workers: int = typer.Option(1, min=1, help="Generator processes."),
    batch_size: int = typer.Option(8, min=1),
    examples: int = typer.Option(3, min=0, help="Best and worst examples drawn per group (0: none)."),
    answer_start: bool = typer.Option(False, help="--model only: REC answers start with 'The <phrase>' given."),
) -> None:
    """The generated benchmark in one command: held-out synthetic data, predictions, report with baselines.

    Data come from a seed reserved for evaluation (omniground.eval.heldout, refused by training): split
    'test' is in distribution, split 'unseen' holds combinations never generated for training. Re-running
    reuses the data and every prediction already made.
    """
    predictor = _predictor(model, endpoint, endpoint_model, api_key, "auto", "", answer_start=answer_start)
    mods = tuple(m.strip() for m in modalities.split(",") if m.strip())
    data, notes = prepare_generated(out / "data", n, mods, workers=workers)
    evaluate(data, out, predictor, data.parent, notes, batch_size=batch_size, examples=examples)


def _print_metrics(system: str, metrics: dict) -> None:
    from omniground.eval.report import HEADLINE, interval_text

    for group, m in metrics.items():
        table = Table(title=f"{system} - {group} (n={m.get('n')})")
        cols = [c for c in HEADLINE if c in m]
        for c in cols:
            table.add_column(c, justify="right")
        table.add_row(*[f"{m[c]:.3f}" for c in cols])
        if ci := m.get("ci95"):
            table.add_row(*[f"[dim]{interval_text(ci[c])}[/dim]" if c in ci else "" for c in cols])
        console.print(table)
    if any("ci95" in m for m in metrics.values()):
        console.print("[dim]under each share: its 95% interval (Wilson)[/dim]")


def _per_sample(metrics_json: Path) -> dict[str, dict[str, float]] | None:
    """group -> sample id -> top-1 IoU, from the per_sample.jsonl `eval run` writes beside metrics.json."""
    from omniground.eval.report import PER_SAMPLE

    path = metrics_json.parent / PER_SAMPLE
    if not path.is_file():
        return None
    out: dict[str, dict[str, float]] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            r = json.loads(line)
            out.setdefault(str(r["group"]), {})[str(r["id"])] = float(r["iou"])
        except (ValueError, KeyError, TypeError) as e:
            raise EvalError(f"{path}: line {i} is not an id, group and iou ({type(e).__name__})") from e
    return out


def _paired(metric: str, a: dict[str, float] | None, b: dict[str, float] | None) -> tuple[int, int, float] | None:
    """For a top-1 IoU threshold metric (acc@t, r1@t) scored on the same samples by both: (right for A alone,
    right for B alone, McNemar's exact p-value); None where it cannot be paired."""
    from omniground.eval.metrics import paired_p_value, right_at

    kind, _, threshold = metric.partition("@")
    if kind not in ("acc", "r1") or not a or not b or a.keys() != b.keys():
        return None
    ids = list(a)
    right_a, right_b = (right_at([ious[i] for i in ids], float(threshold)) for ious in (a, b))
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    return only_a, only_b, paired_p_value(only_a, only_b)


@app.command("compare")
def compare(a: Path = typer.Argument(..., help="metrics.json of system A, or the `eval run --out` folder holding it"),
            b: Path = typer.Argument(..., help="metrics.json of system B, or its folder")) -> None:
    """Side-by-side table of two metrics.json files with B - A deltas, and where both were scored on the same
    samples (per_sample.jsonl beside each), the samples each got right alone and whether that split is chance."""
    from omniground.eval.report import HEADLINE

    a, b = (p / "metrics.json" if p.is_dir() else p for p in (a, b))
    docs = []
    for p in (a, b):
        try:
            docs.append(json.loads(p.read_text()))
        except (OSError, ValueError) as e:
            raise EvalError(f"{p}: not a readable metrics.json ({type(e).__name__})") from e
    (da, db) = docs
    sa, sb = _per_sample(a), _per_sample(b)
    console.print(f"A: {da.get('system', a)}   B: {db.get('system', b)}", highlight=False)
    paired_any = False
    for group in sorted(set(da["metrics"]) | set(db["metrics"])):  # a table each: names like audio_grounding/unseen
        table = Table(title=group)
        for col in ("metric", "A", "B", "B - A", "A only", "B only", "p"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        ma, mb = da["metrics"].get(group, {}), db["metrics"].get(group, {})
        for k in [c for c in HEADLINE if c in ma or c in mb]:
            va, vb = ma.get(k), mb.get(k)
            delta = "" if va is None or vb is None else f"{vb - va:+.3f}"
            style = "green" if delta.startswith("+") and delta != "+0.000" else "red" if delta.startswith("-") else ""
            paired = _paired(k, (sa or {}).get(group), (sb or {}).get(group))
            paired_any |= paired is not None
            only = ["", "", ""]
            if paired is not None:
                p = f"{paired[2]:.3f}"
                only = [str(paired[0]), str(paired[1]), f"[bold]{p}[/bold]" if paired[2] < 0.05 else p]
            table.add_row(k, "-" if va is None else f"{va:.3f}", "-" if vb is None else f"{vb:.3f}",
                          f"[{style}]{delta}[/{style}]" if style else delta, *only)
        console.print(table)
    if paired_any:
        console.print("A only / B only: the samples that system alone got right (top-1 IoU at the threshold); p: "
                      "McNemar's exact test on them, the chance of a split this uneven between two equally good "
                      "systems (bold below 0.05).", highlight=False, soft_wrap=True)
    elif sa is None or sb is None:
        console.print(f"[dim]no per-sample IoUs beside {a if sa is None else b} (per_sample.jsonl, written by "
                      "`omniground eval run`): deltas only, not paired[/dim]", soft_wrap=True)
    else:
        console.print("[dim]no group was scored on the same samples by both: deltas only, not paired[/dim]",
                      soft_wrap=True)
