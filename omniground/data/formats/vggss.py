"""VGG-SS, VGG-Sound Sources (Chen et al. 2021, "Localizing Visual Sounds the Hard Way").

Supported layout (the one the public training code uses, e.g. EZ-VSL / ACL-SSL):
- `vggss.json`: [{"file": "<youtube_id>_<start_s>", "class": "<VGGSound class>",
  "bbox": [[x1, y1, x2, y2], ...]}] with corners normalised 0..1 of the annotated frame
  (values a hair outside 0..1 occur; clipped);
- `--media-root/frames/<file>.jpg` (the annotated frame) and `--media-root/audio/<file>.wav`
  (the 10-s clip). The clip duration is read from the file, else --durations, else 10 s (VGGSound
  clips are 10 s; meta.duration_assumed is then set).
One sound-localisation sample (image + audio -> boxes of the sounding object) per file.
"""

from __future__ import annotations

from typing import Iterator

from omniground.data.formats.base import AUDIO_EXTS, NOT_AN_OBJECT, Context, FormatError, Skip, load_json, single_turn
from omniground.data.schema import Sample
from omniground.grounding import Box

LICENSE = "CC BY 4.0 (VGGSound / VGG-SS annotations); media: YouTube"
CLIP_S = 10.0


def _clip01(v: float) -> float:
    return min(1.0, max(0.0, float(v)))


def convert(ctx: Context) -> Iterator[Sample | Skip]:
    split = ctx.options.get("split") or "test"  # VGG-SS is VGG-Sound's localisation test set
    for path in ctx.inputs:
        records = load_json(path)
        if not isinstance(records, list):
            raise FormatError(f"{path}: expected a list of {{file, class, bbox}}")
        for n, rec in enumerate(records):
            if not isinstance(rec, dict):
                yield Skip(NOT_AN_OBJECT, f"vggss-{n}")
                continue
            name = str(rec.get("file", ""))
            rid = f"vggss-{name}"
            phrase = " ".join(str(rec.get("class", "")).replace("_", " ").split())
            try:
                boxes = [Box(*(_clip01(v) for v in b)) for b in rec.get("bbox") or []]
            except (TypeError, ValueError) as e:
                yield Skip(f"bad bbox ({type(e).__name__})", rid)
                continue
            boxes = [b for b in boxes if b.area > 0]
            if not boxes:
                yield Skip("no non-empty box", rid)
                continue
            if not phrase:
                yield Skip("no class", rid)
                continue
            image, why = ctx.media(ctx.find(name, (".jpg", ".png"), "frames"), "image")
            if image is None:
                yield Skip(why, rid)
                continue
            meta = {"file": name, "class": rec.get("class")}
            audio_path = ctx.find(name, AUDIO_EXTS, "audio")
            audio, why = ctx.media(audio_path, "audio")
            if audio is None:
                audio, _ = ctx.media(audio_path, "audio", duration=CLIP_S)
                meta["duration_assumed"] = True
            media = [image, audio]
            yield ctx.sample(
                id=rid, media=media,
                conversation=single_turn(ctx, "sound_localization", rid, media, rid, phrase=phrase, items=boxes),
                boxes=[{"phrase": phrase, "box": b.xyxy} for b in boxes], task="sound_localization", stage=2,
                source="vggss", license=ctx.options.get("license") or LICENSE, split=split, meta=meta,
            )
