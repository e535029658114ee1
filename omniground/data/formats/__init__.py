"""Converters from public dataset releases to the omniground schema, by format name.

`convert(format, inputs, media_root, out, ...)` runs one and returns its Report; each module's
docstring states the exact release layout it reads.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from omniground.data.formats import (
    activitynet,
    charades_sta,
    clotho,
    conversations,
    didemo,
    flickr30k,
    qvhighlights,
    refcoco,
    vggss,
    visual_genome,
)
from omniground.data.formats.base import Context, Converter, FormatError, Report, Skip, load_durations, run_converter


@dataclass(frozen=True)
class Format:
    convert: Converter
    inputs: str  # what --input is, for the help text
    modality: str


FORMATS: dict[str, Format] = {
    "refcoco": Format(functools.partial(refcoco.convert, source="refcoco"),
                      "folder with refs(unc).p + instances.json", "image"),
    "refcoco+": Format(functools.partial(refcoco.convert, source="refcoco+"),
                       "folder with refs(unc).p + instances.json", "image"),
    "refcocog": Format(functools.partial(refcoco.convert, source="refcocog"),
                       "folder with refs(umd).p (or refs(google).p) + instances.json", "image"),
    "visual_genome": Format(visual_genome.convert, "folder with region_descriptions.json + image_data.json", "image"),
    "flickr30k_entities": Format(flickr30k.convert, "folder with Sentences/ + Annotations/", "image"),
    "charades_sta": Format(charades_sta.convert, "charades_sta_{train,test}.txt", "video"),
    "didemo": Format(didemo.convert, "{train,val,test}_data.json", "video"),
    "activitynet_captions": Format(activitynet.convert, "train.json / val_1.json / val_2.json", "video"),
    "qvhighlights": Format(qvhighlights.convert, "highlight_*_release.jsonl", "video"),
    "vggss": Format(vggss.convert, "vggss.json (frames/ + audio/ under --media-root)", "image+audio"),
    "clotho": Format(clotho.convert, "clotho_captions_*.csv", "audio"),
    "llava": Format(conversations.convert_llava, "LLaVA conversation JSON", "any"),
    "groundinggpt": Format(conversations.convert_groundinggpt, "GroundingGPT training JSON", "any"),
}
ALIASES = {"vg": "visual_genome", "flickr30k": "flickr30k_entities", "charades": "charades_sta",
           "activitynet": "activitynet_captions", "qvh": "qvhighlights", "lego": "groundinggpt"}


def resolve(name: str) -> str:
    key = name.lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in FORMATS and name.lower() in FORMATS:
        key = name.lower()
    if key not in FORMATS:
        raise FormatError(f"unknown format {name!r}; known: {', '.join(FORMATS)}")
    return key


def convert(
    format: str,
    inputs: Sequence[str | Path],
    media_root: str | Path,
    out: str | Path,
    *,
    seed: int = 0,
    durations: str | Path | None = None,
    probe: bool = True,
    progress: bool = False,
    **options: Any,
) -> Report:
    """Convert `inputs` (paths as the format expects) into the schema JSONL `out`; returns the report."""
    name = resolve(format)
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise FormatError(f"{p}: no such file or folder")
    out = Path(out)
    ctx = Context(
        inputs=paths,
        media_root=Path(media_root),
        out_dir=out.parent if str(out.parent) else Path("."),
        report=Report(format=name),
        seed=seed,
        durations=load_durations(Path(durations)) if durations else {},
        probe=probe,
        options={k: v for k, v in options.items() if v is not None},
    )
    return run_converter(name, FORMATS[name].convert, ctx, out, progress=progress)


__all__ = ["FORMATS", "Format", "FormatError", "Report", "Skip", "convert", "resolve"]
