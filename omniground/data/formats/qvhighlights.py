"""QVHighlights (jayleicn/moment_detr): `highlight_{train,val,test}_release.jsonl`.

One JSON object per line: {"qid", "query", "duration" (s), "vid": "<youtube_id>_<start>_<end>",
"relevant_windows": [[start_s, end_s], ...], "relevant_clip_ids", "saliency_scores"}; the test
split has no `relevant_windows` (skipped). Videos are `--media-root/<vid>.mp4`. Every window of a
query is written (several spans in one answer).
"""

from __future__ import annotations

import json
from typing import Iterator

from omniground.data.formats.base import NOT_AN_OBJECT, VIDEO_EXTS, Context, FormatError, Skip, split_from_name
from omniground.data.formats.spans import span_sample
from omniground.data.schema import Sample

LICENSE = "CC BY-NC-SA 4.0 (QVHighlights annotations); videos: YouTube"


def convert(ctx: Context) -> Iterator[Sample | Skip]:
    for path in ctx.inputs:
        if not path.is_file():
            raise FormatError(f"{path}: expected a highlight_*_release.jsonl file")
        split = ctx.options.get("split") or split_from_name(path.name)
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    yield Skip("line is not JSON", f"qvh-{split}-line{n}")
                    continue
                if not isinstance(rec, dict):
                    yield Skip(NOT_AN_OBJECT, f"qvh-{split}-line{n}")
                    continue
                rid = f"qvh-{rec.get('qid', f'line{n}')}"
                windows = rec.get("relevant_windows")
                if not windows:
                    yield Skip("no relevant_windows (test split)", rid)
                    continue
                vid = str(rec.get("vid", ""))
                try:
                    duration = float(rec["duration"])
                except (KeyError, TypeError, ValueError):
                    yield Skip("no duration", rid)
                    continue
                media, why = ctx.media(ctx.find(vid, VIDEO_EXTS), "video", duration=duration)
                if media is None:
                    yield Skip(why, rid)
                    continue
                yield span_sample(
                    ctx, id=rid, media=media, query=str(rec.get("query", "")),
                    windows=[tuple(w) for w in windows], split=split, source="qvhighlights", license=LICENSE,
                    meta={"qid": rec.get("qid"), "vid": vid},
                )
