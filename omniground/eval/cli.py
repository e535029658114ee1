"""`omniground eval`: score a checkpoint or an OpenAI-compatible endpoint, and compare results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from omniground.data.schema import BadLine, read_jsonl
from omniground.errors import UserError
from omniground.eval.predictors import EndpointError, EndpointPredictor, Predictor

app = typer.Typer(help="Evaluate on grounding benchmarks and compare systems.", no_args_is_help=True)
console = Console()


class EvalError(UserError):
    """A user-facing evaluation error (one line, exit 2)."""


def _predictor(model: Optional[str], endpoint: Optional[str], endpoint_model: Optional[str], api_key: Optional[str],
               box_frame: str, prompt_suffix: str) -> Predictor:
    if bool(model) == bool(endpoint):
        raise EvalError("give exactly one of --model PATH or --endpoint URL")
    if endpoint:
        if not endpoint_model:
            raise EvalError("--endpoint needs --endpoint-model NAME")
        return EndpointPredictor(endpoint, endpoint_model, api_key, box_frame=box_frame, prompt_suffix=prompt_suffix)
    from omniground.eval.model_predictor import ModelPredictor

    return ModelPredictor(model)  # type: ignore[arg-type]


@app.command("run")
def run(
    data: Path = typer.Option(..., "--data", help="Benchmark JSONL in the omniground schema."),
    out: Path = typer.Option(..., "--out", help="Folder for predictions, metrics.json and report.md."),
    model: Optional[str] = typer.Option(None, "--model", help="omniground checkpoint (path or name)."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="OpenAI-compatible base URL."),
    endpoint_model: Optional[str] = typer.Option(None, "--endpoint-model", help="Model name at the endpoint."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="OMNIGROUND_EVAL_API_KEY"),
    box_frame: str = typer.Option("auto", help="How the system's numbers > 1 are read: auto, pixel, norm1000."),
    prompt_suffix: str = typer.Option("", help="Text appended to every question (e.g. a format instruction)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Evaluate only the first N samples."),
    batch_size: int = typer.Option(8, min=1),
    media_root: Optional[Path] = typer.Option(None, help="Folder media paths are relative to (default: the data's)."),
) -> None:
    """Predict (resumable), score, and write metrics.json + report.md with baselines, histograms, examples."""
    from omniground.eval.report import write_report
    from omniground.eval.runner import baseline_scores, predict_all, score

    if not data.is_file():
        raise EvalError(f"{data}: no such benchmark file")
    if box_frame not in ("auto", "norm1", "norm1000", "pixel"):
        raise EvalError(f"--box-frame must be auto, norm1, norm1000 or pixel, not {box_frame!r}")
    bad: list[BadLine] = []
    samples = list(read_jsonl(data, bad))[:limit]
    root = media_root or data.parent
    missing = [s for s in samples if any(not s.media_path(i, root).exists() for i in range(len(s.media)))]
    usable = [s for s in samples if s not in missing]
    notes = [f"data: {data} ({len(samples)} samples)"]
    if bad:
        notes.append(f"{len(bad)} invalid lines skipped (first: line {bad[0].line}: {bad[0].error})")
    if missing:
        notes.append(f"{len(missing)} samples skipped: media file missing (first: {missing[0].media[0].path})")
    for n in notes[1:]:
        console.print(f"[yellow]{n}[/yellow]")
    if not usable:
        raise EvalError(f"{data}: no sample with its media present")
    predictor = _predictor(model, endpoint, endpoint_model, api_key, box_frame, prompt_suffix)
    try:
        preds = predict_all(usable, root, predictor, out / "predictions.jsonl", batch_size=batch_size)
    except EndpointError as e:
        raise EvalError(f"{e} (predictions so far kept in {out / 'predictions.jsonl'}; re-run to resume)") from e
    metrics = score(usable, preds)
    report = write_report(out, predictor.name, metrics, baseline_scores(usable), usable, preds, root, notes)
    _print_metrics(predictor.name, metrics)
    console.print(f"report: {report}")


def _print_metrics(system: str, metrics: dict) -> None:
    from omniground.eval.report import HEADLINE

    for group, m in metrics.items():
        table = Table(title=f"{system} - {group} (n={m.get('n')})")
        cols = [c for c in HEADLINE if c in m]
        for c in cols:
            table.add_column(c, justify="right")
        table.add_row(*[f"{m[c]:.3f}" for c in cols])
        console.print(table)


@app.command("compare")
def compare(a: Path = typer.Argument(..., help="metrics.json of system A"),
            b: Path = typer.Argument(..., help="metrics.json of system B")) -> None:
    """Side-by-side table of two metrics.json files with B - A deltas."""
    from omniground.eval.report import HEADLINE

    docs = []
    for p in (a, b):
        try:
            docs.append(json.loads(p.read_text()))
        except (OSError, ValueError) as e:
            raise EvalError(f"{p}: not a readable metrics.json ({type(e).__name__})") from e
    (da, db) = docs
    table = Table(title=f"{da.get('system', a)} vs {db.get('system', b)}")
    for col in ("group", "metric", "A", "B", "B - A"):
        table.add_column(col, justify="left" if col in ("group", "metric") else "right")
    for group in sorted(set(da["metrics"]) | set(db["metrics"])):
        ma, mb = da["metrics"].get(group, {}), db["metrics"].get(group, {})
        for k in [c for c in HEADLINE if c in ma or c in mb]:
            va, vb = ma.get(k), mb.get(k)
            delta = "" if va is None or vb is None else f"{vb - va:+.3f}"
            style = "green" if delta.startswith("+") and delta != "+0.000" else "red" if delta.startswith("-") else ""
            table.add_row(group, k, "-" if va is None else f"{va:.3f}", "-" if vb is None else f"{vb:.3f}",
                          f"[{style}]{delta}[/{style}]" if style else delta)
    console.print(table)
