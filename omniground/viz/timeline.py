"""Time spans against the media they locate: sampled video frames over a timeline, audio waveform over a timeline.

Figures are laid out by hand in inches (no layout engine), so each axes' position is fixed when the
function returns and `ax.transData` maps seconds to the pixels of the saved PNG. Axes carry labels
("timeline", "frame 3", "waveform", "spectrogram") so callers and tests can find them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import ConnectionPatch, Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator
from PIL import Image

from omniground.grounding import Span
from omniground.viz.common import format_seconds, label_text, new_figure, phrase_colors, save_png

DPI = 100
FIG_W = 12.0  # inches; 1200 px at DPI
LEFT, RIGHT = 1.15, 0.3  # margins (inches); the left one holds the lane names
AXIS_W = FIG_W - LEFT - RIGHT
LANE_H = 0.32  # one lane of span bars (inches)
GROUP_GAP = 0.4  # between the predicted and ground-truth lane groups (in lanes)
LABEL_PT = 9
MAX_FRAME_H = 2.0  # inches; a single frame must not become a poster
LONG_MEDIA_S = 120  # from this duration on, times read m:ss instead of seconds


def draw_video_spans(
    frames: np.ndarray,
    timestamps: Sequence[float] | np.ndarray,
    duration: float,
    spans: Sequence[Span],
    out: str | os.PathLike | None = None,
    gt: Sequence[Span] | None = None,
    title: str | None = None,
    *,
    max_frames: int = 16,
) -> Figure:
    """A strip of frames (timestamp under each, linked to its time) above a 0..duration timeline of spans.

    frames: uint8 (N, H, W, 3); timestamps: seconds (N,). At most `max_frames` evenly chosen frames are
    shown. A frame whose time falls in a predicted span gets that span's colour as its border.
    Returns the figure (no pyplot state); saves a PNG to `out` if given.
    """
    frames = np.asarray(frames)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be (N, H, W, 3) with N >= 1, got shape {frames.shape}")
    if timestamps.shape != (len(frames),):
        raise ValueError(f"need one timestamp per frame: {len(frames)} frames, timestamps shape {timestamps.shape}")
    _check_duration(duration)
    keep = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), max_frames)).round().astype(int))
    frames, timestamps = frames[keep], timestamps[keep]  # (n, H, W, 3), (n,)
    n, frame_px_h, frame_px_w = frames.shape[:3]

    lanes = _pack_lanes(spans, gt, duration)
    slot = AXIS_W / n
    frame_w = slot * 0.92
    frame_h = frame_w * frame_px_h / frame_px_w
    if frame_h > MAX_FRAME_H:
        frame_h, frame_w = MAX_FRAME_H, MAX_FRAME_H * frame_px_w / frame_px_h
    title_h, stamp_h, gap, bottom = (0.45 if title else 0.15), 0.3, 0.3, 0.55
    fig_h = title_h + frame_h + stamp_h + gap + lanes.height_in + bottom
    fig, rect = _figure(fig_h, title)

    timeline = fig.add_axes(rect(LEFT, fig_h - bottom - lanes.height_in, AXIS_W, lanes.height_in), label="timeline")
    _draw_lanes(timeline, lanes, duration)
    for t in timestamps:  # where the frames were sampled, behind the bars
        timeline.axvline(t, color="#d0d0d0", lw=0.8, zorder=0)

    long = duration >= LONG_MEDIA_S
    for i, (frame, t) in enumerate(zip(frames, timestamps)):
        x = LEFT + slot * (i + 0.5) - frame_w / 2
        ax = fig.add_axes(rect(x, title_h, frame_w, frame_h), label=f"frame {i}")
        ax.imshow(_thumbnail(frame, frame_w * DPI), aspect="auto", interpolation="antialiased")
        ax.set_xticks([])
        ax.set_yticks([])
        hit = next((s for s in spans if s.start * duration <= t <= s.end * duration), None)
        for spine in ax.spines.values():
            spine.set_edgecolor(lanes.colors[hit.phrase] if hit else "#999999")
            spine.set_linewidth(3.0 if hit else 0.6)
        ax.text(0.5, -0.03, format_seconds(t, long), transform=ax.transAxes, ha="center", va="top", fontsize=LABEL_PT)
        # The strip is evenly spaced but the samples need not be: a thin line shows each frame's true time.
        link = ConnectionPatch(
            xyA=(0.5, -stamp_h / frame_h), coordsA=ax.transAxes,
            xyB=(t, 1.0), coordsB=timeline.get_xaxis_transform(),
            color="#b0b0b0", lw=0.8,
        )  # fmt: skip
        fig.add_artist(link)

    if out is not None:
        save_png(fig, out)
    return fig


def draw_audio_spans(
    samples: np.ndarray,
    sample_rate: int,
    spans: Sequence[Span],
    out: str | os.PathLike | None = None,
    gt: Sequence[Span] | None = None,
    title: str | None = None,
    *,
    spectrogram: bool = True,
    max_points: int = 2000,
) -> Figure:
    """Waveform (and a small spectrogram) with spans shaded, above a timeline of labelled span bars.

    samples: float32 (T,) mono. Long audio is drawn as a min/max envelope of at most `max_points`
    buckets, so an hour of audio costs the same to plot as a second. Returns the figure.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1 or len(samples) == 0:
        raise ValueError(f"samples must be a non-empty 1-D array, got shape {samples.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    duration = len(samples) / sample_rate

    lanes = _pack_lanes(spans, gt, duration)
    title_h, wave_h, spec_h, gap, bottom = (0.45 if title else 0.15), 1.5, (1.1 if spectrogram else 0.0), 0.12, 0.55
    fig_h = title_h + wave_h + gap + (spec_h + gap if spectrogram else 0) + lanes.height_in + bottom
    fig, rect = _figure(fig_h, title)

    timeline = fig.add_axes(rect(LEFT, fig_h - bottom - lanes.height_in, AXIS_W, lanes.height_in), label="timeline")
    _draw_lanes(timeline, lanes, duration)
    wave = fig.add_axes(rect(LEFT, title_h, AXIS_W, wave_h), label="waveform", sharex=timeline)
    times, low, high = _envelope(samples, sample_rate, max_points)
    if low is high:
        wave.plot(times, low, color="#4c4c4c", lw=0.8)
    else:
        wave.fill_between(times, low, high, color="#4c4c4c", lw=0)
    peak = float(np.max(np.abs(samples))) or 1.0
    wave.set_ylim(-1.08 * peak, 1.08 * peak)
    wave.set_ylabel("amplitude", fontsize=LABEL_PT)
    shaded = [wave]

    if spectrogram:
        spec = fig.add_axes(rect(LEFT, title_h + wave_h + gap, AXIS_W, spec_h), label="spectrogram", sharex=timeline)
        db, extent = _spectrogram_db(samples, sample_rate)
        spec.imshow(db, origin="lower", aspect="auto", extent=extent, cmap="magma", interpolation="antialiased")
        spec.set_ylabel("kHz", fontsize=LABEL_PT)
        shaded.append(spec)

    for ax in shaded:
        ax.tick_params(labelbottom=False, labelsize=LABEL_PT - 1)
        for span, is_gt in [(s, True) for s in gt or []] + [(s, False) for s in spans]:
            a, b = span.to_seconds(duration)
            color = lanes.colors[span.phrase]
            if ax is wave:  # shading under the waveform: predictions filled, ground truth hatched
                style = dict(facecolor="none", edgecolor=color, hatch="//", ls="--", lw=1.0) if is_gt else \
                    dict(facecolor=color, alpha=0.3, lw=0)
                ax.axvspan(a, b, zorder=0, **style)
            else:  # the spectrogram's colours are the data: span edges only
                for edge in (a, b):
                    ax.axvline(edge, color=color, lw=1.5, ls="--" if is_gt else "-")
    timeline.set_xlim(0, duration)

    if out is not None:
        save_png(fig, out)
    return fig


# ---------------------------------------------------------------------------------------------
# Shared layout pieces.


def _check_duration(duration: float) -> None:
    if not np.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration}")


def _figure(fig_h: float, title: str | None):
    """New figure plus `rect(x, y_from_top, w, h)` (inches) -> figure-fraction axes rectangle."""
    fig = new_figure(FIG_W, fig_h, dpi=DPI)
    if title:
        fig.text(LEFT / FIG_W, 1 - 0.12 / fig_h, label_text(title, max_chars=110), ha="left", va="top",
                 fontsize=12, fontweight="bold")  # fmt: skip

    def rect(x: float, y_top: float, w: float, h: float) -> tuple[float, float, float, float]:
        return (x / FIG_W, 1 - (y_top + h) / fig_h, w / FIG_W, h / fig_h)

    return fig, rect


@dataclass
class _Bar:
    span: Span
    row: float  # top of the bar's lane, in lane units from the top
    text: str
    right_aligned: bool  # label ends at the span end (spans near the end of the media)
    is_gt: bool


@dataclass
class _Lanes:
    bars: list[_Bar]
    groups: list[tuple[str, float, float]]  # (name, first row, number of rows)
    colors: dict[str, str]
    rows: float

    @property
    def height_in(self) -> float:
        return self.rows * LANE_H + 0.1


def _pack_lanes(spans: Sequence[Span], gt: Sequence[Span] | None, duration: float) -> _Lanes:
    """Stack spans into as few lanes as keep neither bars nor their labels overlapping; gt gets its own group."""
    _check_duration(duration)
    colors = phrase_colors([s.phrase for s in spans] + [s.phrase for s in gt or []])
    seconds_per_inch = duration / AXIS_W
    groups_in = [("predicted", list(spans), False)] + ([("ground truth", list(gt), True)] if gt is not None else [])
    bars, groups, row = [], [], 0.0
    for name, group, is_gt in groups_in:
        lane_ends: list[float] = []  # per lane: where its last occupant (bar or label) ends, seconds
        for span in sorted(group, key=lambda s: (s.start, s.end)):
            a, b = span.to_seconds(duration)
            text = label_text(span.phrase, span.score)
            # Label width in seconds, from an average DejaVu glyph width of ~0.6 em plus the label's padding.
            text_s = ((len(text) * 0.6 * LABEL_PT / 72 + 0.12) if text else 0.0) * seconds_per_inch
            right_aligned = a + text_s > duration
            lo, hi = (min(a, b - text_s), b) if right_aligned else (a, max(b, a + text_s))
            lane = next((k for k, end in enumerate(lane_ends) if end <= lo), len(lane_ends))
            if lane == len(lane_ends):
                lane_ends.append(hi)
            lane_ends[lane] = hi + 0.01 * duration
            bars.append(_Bar(span, row + lane, text, right_aligned, is_gt))
        rows = max(1, len(lane_ends))
        groups.append((name, row, rows))
        row += rows + GROUP_GAP
    return _Lanes(bars, groups, colors, rows=row - GROUP_GAP)


def _draw_lanes(ax: Axes, lanes: _Lanes, duration: float) -> None:
    """Span bars on a seconds axis: predictions filled, ground truth hatched with a dashed edge."""
    ax.set_xlim(0, duration)
    ax.set_ylim(lanes.rows, 0)  # row 0 at the top
    min_w = duration * 0.002  # an instant still gets a visible sliver
    for bar in lanes.bars:
        a, b = bar.span.to_seconds(duration)
        color = lanes.colors[bar.span.phrase]
        if bar.is_gt:
            style = dict(facecolor=color + "26", edgecolor=color, hatch="///", ls="--", lw=1.2)
        else:
            style = dict(facecolor=color, edgecolor="none", alpha=0.9)
        ax.add_patch(Rectangle((a, bar.row + 0.15), max(b - a, min_w), 0.7, **style))
        if bar.text:
            ax.annotate(
                bar.text, (b if bar.right_aligned else a, bar.row + 0.5),
                xytext=(-3 if bar.right_aligned else 3, 0), textcoords="offset points",
                ha="right" if bar.right_aligned else "left", va="center", fontsize=LABEL_PT, annotation_clip=False,
                bbox=dict(boxstyle="round,pad=0.2", fc="white", ec=color, lw=0.8, alpha=0.9),
            )  # fmt: skip
    for name, first, rows in lanes.groups:
        if not any(bar.is_gt == (name == "ground truth") for bar in lanes.bars):
            ax.text(duration / 2, first + rows / 2, "none", ha="center", va="center", fontsize=LABEL_PT,
                    color="#888888", style="italic")  # fmt: skip
    ax.set_yticks([first + rows / 2 for _, first, rows in lanes.groups], [name for name, _, _ in lanes.groups])
    ax.tick_params(axis="y", length=0, labelsize=LABEL_PT)
    ax.tick_params(axis="x", labelsize=LABEL_PT)
    long = duration >= LONG_MEDIA_S
    if long:  # ticks on whole minutes and their usual divisions, not at 8:20
        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, steps=[1, 1.5, 2, 3, 6, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda t, _: format_seconds(t, long) if long else f"{t:g}"))
    ax.set_xlabel("time (m:ss)" if long else "time (s)", fontsize=LABEL_PT)
    ax.grid(axis="x", color="#eeeeee", lw=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _thumbnail(frame: np.ndarray, width_px: float) -> np.ndarray:
    """Frame shrunk to about twice its on-figure width: big frames cost memory and time, not detail."""
    target = max(1, int(2 * width_px))
    if frame.shape[1] <= target:
        return frame
    image = Image.fromarray(frame)
    return np.asarray(image.resize((target, max(1, round(frame.shape[0] * target / frame.shape[1])))))


def _envelope(samples: np.ndarray, sample_rate: int, max_points: int):
    """(times, low, high): the samples themselves if few, else per-bucket min/max over `max_points` buckets."""
    if len(samples) <= 2 * max_points:
        times = np.arange(len(samples)) / sample_rate
        return times, samples, samples
    edges = np.linspace(0, len(samples), max_points + 1).astype(np.int64)  # strictly increasing here
    low = np.minimum.reduceat(samples, edges[:-1])  # (max_points,)
    high = np.maximum.reduceat(samples, edges[:-1])
    times = (edges[:-1] + edges[1:]) / 2 / sample_rate
    return times, low, high


def _spectrogram_db(samples: np.ndarray, sample_rate: int, max_columns: int = 1200):
    """Power spectrogram in dB (freq, time) with ~32 ms windows; the hop grows so there are <= max_columns."""
    n_fft = int(2 ** round(np.log2(max(16, 0.032 * sample_rate))))
    if len(samples) < n_fft:
        samples = np.pad(samples, (0, n_fft - len(samples)))
    hop = max(n_fft // 4, -(-(len(samples) - n_fft + 1) // max_columns))
    windows = np.lib.stride_tricks.sliding_window_view(samples, n_fft)[::hop]  # (F, n_fft), a view
    power = np.abs(np.fft.rfft(windows * np.hanning(n_fft), axis=1)) ** 2  # (F, n_fft // 2 + 1)
    db = 10 * np.log10(power + 1e-12)
    db = np.maximum(db, db.max() - 80)  # 80 dB of range: quieter detail is noise on a screen
    end = ((len(windows) - 1) * hop + n_fft) / sample_rate
    return db.T, (0.0, end, 0.0, sample_rate / 2000)
