"""DiDeMo (LisaAnne/LocalizingMoments): `{train,val,test}_data.json`.

A list of {"annotation_id", "description", "video": "<file>", "times": [[s, e], ...] (one pair per
annotator, indices of 5-s segments, both inclusive: [1, 2] = 5 s..15 s), "download_link", ...}.
Videos are `--media-root/<video>` (the release's file names, extension as given).

Ground truth from the annotators (DiDeMo has no single label): the [s, e] pair chosen by the most
annotators; a tie goes to the pair with the highest mean temporal IoU with all annotators' pairs
(the consensus), then to the earliest. Seconds are s*5 .. (e+1)*5, clipped to the duration.
Durations come from the file or --durations; without either, 30 s is assumed (DiDeMo keeps the
first 30 s of each video, six 5-s segments) and meta.duration_assumed is set, since a shorter video
would shift the written fractions.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterator

from omniground.data.formats.base import NOT_AN_OBJECT, Context, FormatError, Skip, load_json, split_from_name
from omniground.data.formats.spans import span_sample
from omniground.data.schema import Sample
from omniground.grounding import span_iou

LICENSE = "DiDeMo annotations: see source terms; videos: YFCC100M Creative Commons"
SEGMENT_S = 5.0
ASSUMED_DURATION_S = 30.0


def consensus(times: list[list[int]]) -> tuple[int, int]:
    """The annotators' consensus segment pair (see the module docstring for the rule)."""
    pairs = [(int(s), int(e)) for s, e in times]
    counts = Counter(pairs)

    def agreement(p: tuple[int, int]) -> float:
        return sum(span_iou((p[0], p[1] + 1), (q[0], q[1] + 1)) for q in pairs) / len(pairs)

    return max(counts, key=lambda p: (counts[p], agreement(p), -p[0], -p[1]))


def convert(ctx: Context) -> Iterator[Sample | Skip]:
    for path in ctx.inputs:
        records = load_json(path)
        if not isinstance(records, list):
            raise FormatError(f"{path}: expected a list of DiDeMo annotations")
        split = ctx.options.get("split") or split_from_name(path.name)
        for n, rec in enumerate(records):
            if not isinstance(rec, dict):
                yield Skip(NOT_AN_OBJECT, f"didemo-{n}")
                continue
            rid = f"didemo-{rec.get('annotation_id', n)}"
            times = rec.get("times") or []
            if not times or not all(isinstance(t, (list, tuple)) and len(t) == 2 for t in times):
                yield Skip("no annotator times", rid)
                continue
            s, e = consensus(times)
            video = str(rec.get("video", ""))
            media, why = ctx.media(ctx.media_path(video), "video")
            meta = {"video": video, "times": times, "segments": [s, e]}
            if media is None:
                media, _ = ctx.media(ctx.media_path(video), "video", duration=ASSUMED_DURATION_S)
                meta["duration_assumed"] = True
            yield span_sample(
                ctx, id=rid, media=media, query=str(rec.get("description", "")),
                windows=[(s * SEGMENT_S, (e + 1) * SEGMENT_S)], split=split, source="didemo",
                license=LICENSE, meta=meta,
            )
