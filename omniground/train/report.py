"""What a stage shows and leaves for people: its progress while it runs (`StageProgress`), then metrics.json and a
loss-curve PNG (and one for a whole recipe)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from omniground.files import atomic_output


class StageProgress:
    """A training loop's progress, the same for every stage: in a terminal, a bar with the loss, lr and
    throughput; in a log (a pipe, a file, `nohup`), one line per `report`, as rich draws a bar there only once
    it ends and a 27-minute stage would print nothing until then."""

    def __init__(self, console: Console, label: str, total: int, completed: int = 0, unit: str = "samples",
                 shown: bool = True, every: int = 10):
        self.console, self.label, self.total, self.unit, self.every = console, label, total, unit, every
        self.started = time.perf_counter()
        # `step`'s window since its last report: when it began, its steps' losses, its items
        self.since, self.losses, self.items = self.started, [], 0
        self.lines = shown and not console.is_terminal
        self.bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                            disable=not shown or self.lines)
        self.task = self.bar.add_task(label, total=total, completed=completed, info="")
        self.first = completed

    def __enter__(self) -> StageProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def advance_to(self, step: int) -> None:
        self.bar.update(self.task, completed=step)

    def step(self, step: int, loss: float, lr: float, items: int, extra: str = "") -> None:
        """After each step of a plain loop: every `every` steps and at the last, `report` the mean loss and the
        items a second since the last report."""
        self.losses.append(loss)
        self.items += items
        if step % self.every and step != self.total:
            return
        rate = self.items / max(time.perf_counter() - self.since, 1e-9)
        self.report(step, sum(self.losses) / len(self.losses), lr, rate, extra)
        self.since, self.losses, self.items = time.perf_counter(), [], 0

    def advance(self, items: int) -> None:
        """A pass with no loss (data read through a model, `total` items): `items` more done; in a log, a line at
        each tenth of the way."""
        task = self.bar.tasks[0]
        before = task.completed
        self.bar.update(self.task, advance=items)
        if self.lines and int(10 * task.completed / self.total) > int(10 * before / self.total):
            rate = (task.completed - self.first) / max(time.perf_counter() - self.started, 1e-9)
            self.console.print(f"{self.label} {task.completed:.0f}/{self.total} {rate:.1f} {self.unit}/s",
                               highlight=False, soft_wrap=True)

    def report(self, step: int, loss: float, lr: float, rate: float, extra: str = "") -> None:
        """The figures at `step`: the loss (over the steps since the last report), lr, and `unit`s a second."""
        info = f"loss {loss:.4f} lr {lr:.2e} {rate:.1f} {self.unit}/s" + (f" {extra}" if extra else "")
        self.bar.update(self.task, completed=step, info=info)
        if self.lines:
            self.console.print(f"{self.label} step {step}/{self.total} {info}", highlight=False, soft_wrap=True)


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_metrics(path: Path, summary: dict[str, Any]) -> None:
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(_json_safe(summary), indent=2) + "\n", encoding="utf-8")


def plot_curves(path: Path, history: list[dict], evals: list[dict], title: str = "") -> None:
    """One stage: train loss (and held-out loss where measured) against optimizer steps, and below it the
    held-out grounding figures where the stage measured them (`eval_generate`)."""
    plot_stages(path, [(title, history, evals)], title=title)


def headline(figures: dict[str, float]) -> tuple[str, float] | None:
    """A task's held-out figures -> the one its benchmark reports: Acc@0.5 for boxes, R@1 at IoU 0.5 for spans."""
    for key in ("acc@0.5", "r1@0.5"):
        if figures.get(key) is not None:
            return key, figures[key]
    return None


def plot_stages(path: Path, stages: list[tuple[str, list[dict], list[dict]]], title: str = "") -> None:
    """Several stages end to end on one step axis (each stage's steps offset by the ones before): the loss, and
    where any stage generated held-out answers, each task's headline figure in a panel below -- the loss
    alone does not say whether boxes and spans got better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    graded = any(e.get("metrics") for _, _, evals in stages for e in evals)
    fig, axes = plt.subplots(2 if graded else 1, 1, figsize=(8, 6.5 if graded else 4), dpi=100, sharex=True,
                             squeeze=False, gridspec_kw={"height_ratios": [3, 2]} if graded else None)
    ax = axes[0, 0]
    offset = 0
    figures: dict[str, list[tuple[int, float]]] = {}  # "rec/val acc@0.5" -> (step, value) across stages
    for k, (name, history, evals) in enumerate(stages):
        colour = f"C{k}"
        label = f"{name} " if len(stages) > 1 else ""
        if history:
            ax.plot([offset + r["step"] for r in history], [r["loss"] for r in history], color=colour, lw=1.2,
                    label=f"{label}train loss")
        held = [e for e in evals if e.get("eval_loss") is not None]
        if held:
            ax.plot([offset + e["step"] for e in held], [e["eval_loss"] for e in held], "o--", color=colour,
                    lw=1, label=f"{label}held-out loss")
        for e in evals:
            for task, values in (e.get("metrics") or {}).items():
                if (found := headline(values)) is not None:
                    figures.setdefault(f"{task} {found[0]}", []).append((offset + e["step"], found[1]))
        offset += max([r["step"] for r in history] + [e["step"] for e in evals] + [0])
        if len(stages) > 1:
            for a in axes[:, 0]:
                a.axvline(offset, color="0.7", lw=0.8)
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    lo, hi = ax.get_ylim()
    if hi / max(lo, 1e-12) < 10:  # within one decade the minor ticks need labels; across several they overlap
        ax.yaxis.set_minor_formatter(ScalarFormatter())
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    if graded:
        low = axes[1, 0]
        for j, (name, points) in enumerate(sorted(figures.items())):
            low.plot(*zip(*points), "o-", color=f"C{j}", lw=1, ms=4, label=name)
        low.set_ylim(0, 1)
        low.set_ylabel("held out")
        low.grid(alpha=0.3)
        low.legend(fontsize=8, loc="lower right")
    axes[-1, 0].set_xlabel("optimizer step")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# The held-out figures of a recipe run (the evaluations `scripts/train_default.sh` writes under its run folder),
# with the targets the default model is held to: label, folder, task, metric, target.
RECIPE_FIGURES = (
    ("REC Acc@0.5, test, phrase given", "eval-test-rec-phrase", "rec", "acc@0.5", 0.85),
    ("REC Acc@0.5, test, free answer", "eval-test", "rec", "acc@0.5", 0.85),
    ("video R@1 at IoU 0.5, test", "eval-test", "video_grounding", "r1@0.5", 0.75),
    ("audio R@1 at IoU 0.5, test", "eval-test", "audio_grounding", "r1@0.5", 0.75),
    ("REC, unseen combinations, phrase given", "eval-unseen-rec-phrase", "rec", "acc@0.5", None),
    ("REC, unseen combinations, free answer", "eval-unseen", "rec", "acc@0.5", None),
    ("video, unseen combinations", "eval-unseen", "video_grounding", "r1@0.5", None),
    ("audio, unseen combinations", "eval-unseen", "audio_grounding", "r1@0.5", None),
    ("REC, second draw (seed 4), phrase given", "eval-test-images-rec-phrase", "rec", "acc@0.5", None),
    ("REC, second draw (seed 4), free answer", "eval-test-images", "rec", "acc@0.5", None),
    ("sound localisation, second draw (seed 4)", "eval-test-images", "sound_localization", "acc@0.5", None),
    ("REC, large draw (seed 40), phrase given", "eval-test-large-rec-phrase", "rec", "acc@0.5", None),
    ("REC, large draw (seed 40), free answer", "eval-test-large-rec", "rec", "acc@0.5", None),
    ("sound localisation, large draw (seed 40)", "eval-test-large-sound", "sound_localization", "acc@0.5", None),
)


def recipe_figures(run: Path) -> dict[str, dict[str, Any]]:
    """A recipe run's held-out figures by `RECIPE_FIGURES` label, {"value", "n"} each, for those it evaluated:
    what a run is compared on, and what the installed model keeps beside its weights (`eval.json`)."""
    out = {}
    for label, folder, task, metric, _ in RECIPE_FIGURES:
        path = run / folder / "metrics.json"
        if not path.is_file():
            continue
        groups = json.loads(path.read_text(encoding="utf-8"))["metrics"]
        found = [g for name, g in groups.items() if name.split("/")[0] == task and g.get(metric) is not None]
        if found:
            out[label] = {"value": found[0][metric], "n": found[0].get("n")}
    return out


def recipe_table(figures: dict[str, dict], shipped: dict[str, dict] | None = None, title: str = ""):
    """A rich table of a run's figures, each with its 95% interval, beside the shipped model's (its `eval.json`)
    and the targets: whether a reproduction got what ships, and how far chance reaches at its n, at a glance."""
    from rich.table import Table

    from omniground.eval.metrics import wilson_interval
    from omniground.eval.report import interval_text

    table = Table(title=title)
    for name, justify in (("held out", "left"), ("n", "right"), ("this run", "right"), ("95% interval", "right"),
                          ("shipped", "right"), ("target", "right")):
        table.add_column(name, justify=justify)
    shown = lambda f: "-" if f is None else f"{f['value']:.3f}"  # noqa: E731
    for label, _, _, _, target in RECIPE_FIGURES:
        mine, theirs = figures.get(label), (shipped or {}).get(label)
        if mine is None and theirs is None:
            continue
        verdict = "" if target is None or mine is None else (" met" if mine["value"] >= target else " missed")
        interval = interval_text(wilson_interval(mine["value"], mine["n"])) if mine and mine.get("n") else ""
        table.add_row(label, str((mine or theirs).get("n") or ""), shown(mine), interval, shown(theirs),
                      "" if target is None else f"{target:.2f}{verdict}")
    return table
