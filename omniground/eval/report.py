"""Evaluation outputs people read: metrics JSON, a Markdown report with a table per benchmark group
(system beside trivial baselines), IoU histograms, and pages of best and worst examples drawn by viz."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from omniground.data.schema import Sample
from omniground.eval.runner import Prediction, finite, ious_by_group
from omniground.files import atomic_output
from omniground.grounding import Box, Span
from omniground.media.errors import MediaError

# Which numbers head each table, in the order the literature prints them.
HEADLINE = ["acc@0.5", "acc@0.75", "acc@0.9", "macc", "r1@0.3", "r1@0.5", "r1@0.7", "r5@0.5", "miou", "event_f1",
            "recall@0.5", "rejection_acc", "yes_no_acc", "exact_match", "no_location"]


PER_SAMPLE = "per_sample.jsonl"  # beside metrics.json


def write_metrics(path: Path, system: str, metrics: dict, baselines: dict, extra: dict | None = None) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(finite({"system": system, "metrics": metrics, "baselines": baselines,
                                          **(extra or {})}), indent=2))


def interval_text(ci: Sequence[float]) -> str:
    return f"{ci[0]:.3f}-{ci[1]:.3f}"


def markdown_report(system: str, metrics: dict, baselines: dict, notes: Sequence[str] = (),
                    histograms: Sequence[str] = ()) -> str:
    """The report's text; `histograms` names the groups that have an IoU histogram to show."""
    lines = [f"# Evaluation: {system}", ""]
    lines += [f"- {n}" for n in notes]
    if notes:
        lines.append("")
    for group, m in metrics.items():
        cols = [c for c in HEADLINE if c in m]
        lines += [f"## {group} (n={m.get('n', '?')})", "", "| system | " + " | ".join(cols) + " |",
                  "| --- |" + " --- |" * len(cols)]
        lines.append(f"| **{system}** | " + " | ".join(f"**{m[c]:.3f}**" for c in cols) + " |")
        if ci := m.get("ci95"):
            lines.append("| 95% interval | " + " | ".join(interval_text(ci[c]) if c in ci else "" for c in cols) + " |")
        for bname, bm in baselines.items():
            if group in bm:
                lines.append(f"| {bname} | " + " | ".join(f"{bm[group].get(c, float('nan')):.3f}" for c in cols) + " |")
        lines.append("")
        if group in histograms:
            lines += [f"![IoU histogram](iou_{group.replace('/', '_')}.png)", ""]
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, system: str, metrics: dict, baselines: dict, samples: Sequence[Sample],
                 preds: dict[str, Prediction], root: Path, notes: Sequence[str] = (), examples: int = 3) -> Path:
    """metrics.json, report.md, per_sample.jsonl (each sample's top-1 IoU), IoU histograms and examples.md with
    best/worst drawings; returns report.md."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics(out_dir / "metrics.json", system, metrics, baselines, {"notes": list(notes)})
    groups = ious_by_group(samples, preds)
    # each sample's top-1 IoU: what `omniground eval compare` pairs two systems' answers on
    with atomic_output(out_dir / PER_SAMPLE) as tmp:
        tmp.write_text("".join(json.dumps({"id": s.id, "group": g, "iou": v}) + "\n"
                               for g, pairs in groups.items() for v, s in pairs))
    for group, pairs in groups.items():
        fig = Figure(figsize=(5, 3), dpi=100)
        ax = fig.add_subplot()
        ax.hist([v for v, _ in pairs], bins=np.linspace(0, 1, 21), color="#3b7dd8", edgecolor="white")
        for t in (0.5,):
            ax.axvline(t, color="#d83b3b", linestyle="--", linewidth=1)
        ax.set(xlabel="IoU with ground truth (top-1)", ylabel="samples", title=group)
        fig.subplots_adjust(left=0.14, bottom=0.17, right=0.97, top=0.88)  # fixed: tight_layout costs ~0.4 s a figure
        with atomic_output(out_dir / f"iou_{group.replace('/', '_')}.png") as tmp:
            fig.savefig(tmp, format="png")
    with atomic_output(out_dir / "report.md") as tmp:
        tmp.write_text(markdown_report(system, metrics, baselines, notes, list(groups)) + "\nBest and worst examples: "
                       "[examples.md](examples.md)\n")
    _write_examples(out_dir, groups, preds, root, examples)
    return out_dir / "report.md"


def _gt_spans(s: Sample) -> list[Span]:
    return [Span.from_seconds(lab.start, lab.end, s.media[lab.media].duration or 0.0) for lab in s.spans]


def _write_examples(out_dir: Path, groups: dict, preds: dict[str, Prediction], root: Path, k: int) -> None:
    from omniground import media as M
    from omniground.viz import draw_audio_spans, draw_boxes, draw_video_spans

    (out_dir / "examples").mkdir(exist_ok=True)
    lines = ["# Best and worst examples", ""]
    for group, pairs in groups.items():
        ranked = sorted(pairs, key=lambda p: -p[0])
        worst = ranked[::-1][:k]  # (ranked[-k:] would be everything for k = 0)
        picks = [("best", p) for p in ranked[:k]] + [("worst", p) for p in worst if p not in ranked[:k]]
        lines += [f"## {group}", ""]
        for label, (iou, s) in picks:
            pred = preds.get(s.id)
            name = "examples/" + re.sub(r"[^A-Za-z0-9._-]", "_", s.id) + ".png"
            target = out_dir / name
            question = next(t.content for t in s.conversation if t.role == "user").split("\n")[-1]
            try:
                path = s.media_path(0, root)
                title = f"{label}  IoU {iou:.2f}  {question}"[:120]
                if s.media[0].type == "image":
                    draw_boxes(M.load_image(path), pred.box_values() if pred else [], out=target,
                               gt=[Box(*b.box) for b in s.boxes], title=title)
                elif s.media[0].type == "video":
                    clip = M.sample_frames(path, 8)
                    draw_video_spans(clip.frames, clip.timestamps, s.media[0].duration, pred.span_values() if pred
                                     else [], out=target, gt=_gt_spans(s), title=title)
                else:
                    audio = M.load_audio(path)
                    draw_audio_spans(audio.samples, audio.sample_rate, pred.span_values() if pred else [],
                                     out=target, gt=_gt_spans(s), title=title)
                answer = pred.text if pred else ""
                lines += [f"**{label}** `{s.id}` IoU {iou:.3f}: {question}", "", f"answer: `{answer}`",
                          "", f"![{s.id}]({name})", ""]
            except (MediaError, OSError) as e:
                lines += [f"**{label}** `{s.id}`: media not drawn ({e})", ""]
    with atomic_output(out_dir / "examples.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
