"""Clotho (Drossos et al. 2020): `clotho_captions_{development,validation,evaluation}.csv`.

Columns `file_name,caption_1,...,caption_5`; audio is `--media-root/<file_name>` (15-30 s wav).
Audio captions carry no time spans: one caption sample per caption (stage 1 alignment by default,
`--stage 3` to use them as instruction data as the original did). The duration is read from the
file, else --durations (`file_name,duration`); a clip with neither is skipped.
"""

from __future__ import annotations

import csv
from typing import Iterator

from omniground.data.formats.base import Context, FormatError, Skip, single_turn, split_from_name
from omniground.data.schema import Sample

LICENSE = "Clotho: audio from Freesound (CC licences per clip), captions: see source terms"


def convert(ctx: Context) -> Iterator[Sample | Skip]:
    stage = int(ctx.options.get("stage") or 1)
    for path in ctx.inputs:
        split = ctx.options.get("split") or split_from_name(path.name)
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = [c for c in (reader.fieldnames or []) if c.startswith("caption")]
            if "file_name" not in (reader.fieldnames or []) or not cols:
                raise FormatError(f"{path}: expected columns file_name,caption_1..caption_5")
            for row in reader:
                name = row["file_name"]
                media, why = ctx.media(ctx.media_path(name), "audio", duration_key=name.rsplit(".", 1)[0])
                for col in cols:
                    rid = f"clotho-{name}-{col}"
                    caption = " ".join((row.get(col) or "").split())
                    if media is None:
                        yield Skip(why, rid)
                        continue
                    if not caption:
                        yield Skip("empty caption", rid)
                        continue
                    yield ctx.sample(
                        id=rid, media=[media],
                        conversation=single_turn(ctx, "caption_audio", rid, [media], rid, caption=caption),
                        task="caption", stage=stage, source="clotho",
                        license=ctx.options.get("license") or LICENSE, split=split, meta={"file_name": name},
                    )
