"""Visual Genome region descriptions (v1.2 / v1.4 release files).

Input: a folder with `region_descriptions.json` and `image_data.json`:
- region_descriptions.json: [{"id": image_id, "regions": [{"region_id", "image_id", "phrase",
  "x", "y", "width", "height"}]}] with boxes in pixels (x, y = top-left);
- image_data.json: [{"image_id" (v1.4; "id" in v1.2), "width", "height", "url", ...}] where the url
  ends in `VG_100K/<id>.jpg` or `VG_100K_2/<id>.jpg`; that tail is the media path under --media-root.
Regions reaching outside the image (it happens in VG) are clipped to it. One sample per region.
"""

from __future__ import annotations

from typing import Iterator

from omniground.data.formats.base import NOT_AN_OBJECT, Context, FormatError, Skip, load_json
from omniground.data.formats.boxes import box_sample, task_option
from omniground.data.schema import Sample
from omniground.grounding import Box

LICENSE = "CC BY 4.0"


def _image_path(info: dict) -> str:
    url = str(info.get("url") or "")
    parts = url.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2].startswith("VG_100K"):
        return f"{parts[-2]}/{parts[-1]}"
    return f"VG_100K/{info.get('image_id', info.get('id'))}.jpg"


def convert(ctx: Context) -> Iterator[Sample | Skip]:
    task = task_option(ctx)
    folder = ctx.inputs[0]
    regions_path = folder / "region_descriptions.json" if folder.is_dir() else folder
    info_path = ctx.options.get("image_data") or regions_path.parent / "image_data.json"
    per_image = load_json(regions_path)
    infos = load_json(info_path)
    if not isinstance(per_image, list) or not isinstance(infos, list):
        raise FormatError(f"{regions_path}: expected lists of images (Visual Genome layout)")
    info_by_id = {i.get("image_id", i.get("id")): i for i in infos if isinstance(i, dict)}
    for n, entry in enumerate(per_image):
        if not isinstance(entry, dict):
            yield Skip(NOT_AN_OBJECT, f"vg-image{n}")
            continue
        image_id = entry.get("id", entry.get("image_id"))
        info = info_by_id.get(image_id)
        regions = entry.get("regions") or []
        if info is None:
            for r in regions:
                yield Skip("image not in image_data.json", f"vg-{r.get('region_id')}")
            continue
        w, h = int(info["width"]), int(info["height"])
        media, why = ctx.media(ctx.media_path(_image_path(info)), "image", width=w, height=h)
        for r in regions:
            rid = f"vg-{r.get('region_id')}"
            if media is None:
                yield Skip(why, rid)
                continue
            try:
                x, y, bw, bh = (float(r[k]) for k in ("x", "y", "width", "height"))
                box = Box.from_pixels((x, y, x + bw, y + bh), w, h)
            except (KeyError, TypeError, ValueError) as e:
                yield Skip(f"bad region box ({type(e).__name__})", rid)
                continue
            yield box_sample(
                ctx, id=rid, media=media, phrase=str(r.get("phrase", "")), boxes=[box], task=task,
                split="train", source="visual_genome", license=LICENSE,
                meta={"image_id": image_id, "region_id": r.get("region_id")},
            )
