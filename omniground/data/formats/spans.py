"""Samples for one query and its time span(s) in one video or audio clip."""

from __future__ import annotations

from omniground.data.formats.base import Context, Skip, single_turn
from omniground.data.schema import Media, Sample
from omniground.grounding import Span

# Annotations a hair past the end (frame rounding) are clipped silently; further past is counted.
_END_SLACK_S = 0.5


def span_sample(
    ctx: Context,
    *,
    id: str,
    media: Media,
    query: str,
    windows: list[tuple[float, float]],
    split: str,
    source: str,
    license: str,
    meta: dict | None = None,
) -> Sample | Skip:
    """`windows` in seconds; clipped to the media's duration; empty or reversed ones skip the record."""
    query = " ".join(str(query).split()).strip()
    if not query:
        return Skip("empty query", id)
    d = float(media.duration)
    meta = dict(meta or {})
    clipped = []
    for start, end in windows:
        start, end = float(start), float(end)
        if not end > start:
            return Skip("empty or reversed span (end <= start)", id)
        if start >= d:
            return Skip("span starts after the media ends", id)
        if end > d + _END_SLACK_S:
            meta["end_clipped_s"] = round(end - d, 3)
        clipped.append((max(0.0, start), min(end, d)))
    task = "audio_grounding" if media.type == "audio" else "video_grounding"
    spans = [Span.from_seconds(s, e, d) for s, e in clipped]
    conversation = single_turn(ctx, task, id, [media], id, query=query, items=spans)
    return ctx.sample(
        id=id,
        media=[media],
        conversation=conversation,
        spans=[{"phrase": query, "start": s, "end": e} for s, e in clipped],
        task=task,
        stage=2,
        source=source,
        license=ctx.options.get("license") or license,
        split=split,
        meta=meta,
    )
