"""What a finished stage leaves for people: metrics.json and a loss-curve PNG (and one for a whole recipe)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omniground.files import atomic_output


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
    """One stage: train loss (and held-out loss where measured) against optimizer steps."""
    plot_stages(path, [(title, history, evals)], title=title)


def plot_stages(path: Path, stages: list[tuple[str, list[dict], list[dict]]], title: str = "") -> None:
    """Several stages end to end on one step axis (each stage's steps offset by the ones before)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    offset = 0
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
        offset += max([r["step"] for r in history] + [e["step"] for e in evals] + [0])
        if len(stages) > 1:
            ax.axvline(offset, color="0.7", lw=0.8)
    ax.set_xlabel("optimizer step")
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
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
