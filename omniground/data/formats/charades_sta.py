"""Charades-STA (jiyanggao/TALL): `charades_sta_{train,test}.txt`.

Each line is `<video_id> <start_s> <end_s>##<sentence>`, e.g. `AO8RW 0.0 6.9##a person is putting a
book on a shelf.`. Videos are `--media-root/<video_id>.mp4` (Charades 480p release).
Durations: read from the video when present, else from `--durations Charades_v1_{train,test}.csv`
(its `id` and `length` columns). Known issues handled here: some annotations end after the video
(clipped to the duration, the excess kept in meta.end_clipped_s), a few have end <= start (skipped),
and the csv `length` differs from the decoded duration for some videos (the file wins).
"""

from __future__ import annotations

from typing import Iterator

from omniground.data.formats.base import VIDEO_EXTS, Context, FormatError, Skip, split_from_name
from omniground.data.formats.spans import span_sample
from omniground.data.schema import Sample

LICENSE = "Charades: non-commercial research terms (see source)"


def convert(ctx: Context) -> Iterator[Sample | Skip]:
    for path in ctx.inputs:
        if not path.is_file():
            raise FormatError(f"{path}: expected a charades_sta_*.txt file")
        split = ctx.options.get("split") or split_from_name(path.name)
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            rid = f"charades-{split}-{n}"
            head, sep, query = line.partition("##")
            fields = head.split()
            if not sep or len(fields) != 3:
                yield Skip("line is not `vid start end##query`", rid)
                continue
            vid = fields[0]
            try:
                start, end = float(fields[1]), float(fields[2])
            except ValueError:
                yield Skip("start/end are not numbers", rid)
                continue
            media, why = ctx.media(ctx.find(vid, VIDEO_EXTS), "video", duration_key=vid)
            if media is None:
                yield Skip(why, rid)
                continue
            yield span_sample(
                ctx, id=rid, media=media, query=query, windows=[(start, end)], split=split,
                source="charades_sta", license=LICENSE, meta={"video_id": vid},
            )
