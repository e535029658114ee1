"""RefCOCO / RefCOCO+ / RefCOCOg, in the layout of the `refer` toolkit (lichengunc/refer).

Input: a folder holding `refs(unc).p` (RefCOCO, RefCOCO+), `refs(umd).p` (RefCOCOg, the default) or
`refs(google).p` (RefCOCOg with --split-by google) and `instances.json`:
- refs pickle: a list of dicts {ref_id, ann_id, image_id, split ("train"/"val"/"testA"/"testB"/"test"),
  category_id, sent_ids, sentences: [{sent_id, sent, raw, tokens}], file_name}.
- instances.json: COCO layout {images: [{id, file_name, width, height}], annotations: [{id, image_id,
  bbox: [x, y, w, h] pixels, category_id}], categories: [{id, name}]}.
Images are looked up as `--media-root/<images[].file_name>` (the COCO train2014 folder).
One sample per referring sentence; its box is the referred annotation's, normalised to xyxy.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Iterator

from omniground.data.formats.base import Context, FormatError, Skip, load_json
from omniground.data.formats.boxes import box_sample, task_option
from omniground.data.schema import Sample
from omniground.grounding import Box

LICENSE = "annotations: refer toolkit (Apache-2.0); images: COCO / Flickr terms of use"


class _PlainUnpickler(pickle.Unpickler):
    """The refs pickles hold only dicts, lists, strings and numbers: refuse any class (no code runs)."""

    def find_class(self, module: str, name: str):  # noqa: D102
        raise pickle.UnpicklingError(f"refs pickle refers to {module}.{name}; only plain data is allowed")


def load_refs(path: Path) -> list[dict]:
    with open(path, "rb") as f:
        try:
            refs = _PlainUnpickler(f).load()
        except UnicodeDecodeError:  # a Python 2 pickle with non-ASCII str
            f.seek(0)
            refs = _PlainUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError) as e:
            raise FormatError(f"{path}: not a refs pickle ({e})") from e
    if not isinstance(refs, list):
        raise FormatError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    return refs


# The splits papers report: UNC for RefCOCO/RefCOCO+, UMD for RefCOCOg (val/test; Google's has no public test).
_DEFAULT_SPLIT_BY = {"refcoco": ("unc",), "refcoco+": ("unc",), "refcocog": ("umd", "google")}


def _find_refs(folder: Path, split_by: str | None, source: str = "refcoco") -> Path:
    if folder.is_file():
        return folder
    names = [f"refs({s}).p" for s in ((split_by,) if split_by else _DEFAULT_SPLIT_BY.get(source, ("unc",)))]
    for n in names:
        if (folder / n).exists():
            return folder / n
    raise FormatError(f"{folder}: no {' or '.join(names)} found")


def convert(ctx: Context, source: str = "refcoco") -> Iterator[Sample | Skip]:
    task = task_option(ctx)
    refs_path = _find_refs(ctx.inputs[0], ctx.options.get("split_by"), source)
    folder = refs_path.parent
    instances_path = Path(ctx.options.get("instances") or folder / "instances.json")
    instances = load_json(instances_path)
    if not isinstance(instances, dict) or "images" not in instances or "annotations" not in instances:
        raise FormatError(f"{instances_path}: not a COCO instances file (needs images and annotations)")
    images = {im["id"]: im for im in instances["images"]}
    anns = {a["id"]: a for a in instances["annotations"]}
    for ref in load_refs(refs_path):
        rid = f"{source}-{ref.get('ref_id')}"
        ann, img = anns.get(ref.get("ann_id")), images.get(ref.get("image_id"))
        if ann is None or img is None:
            yield Skip("ref points at an unknown annotation or image", rid)
            continue
        w, h = int(img["width"]), int(img["height"])
        x, y, bw, bh = (float(v) for v in ann["bbox"])
        try:
            box = Box.from_pixels((x, y, x + bw, y + bh), w, h)
        except ValueError as e:
            yield Skip(f"bad box ({e})", rid)
            continue
        media, why = ctx.media(ctx.media_path(img["file_name"]), "image", width=w, height=h)
        if media is None:
            yield Skip(why, rid)
            continue
        for sent in ref.get("sentences", []):
            phrase = sent.get("sent") or sent.get("raw") or ""
            yield box_sample(
                ctx,
                id=f"{rid}-{sent.get('sent_id')}",
                media=media,
                phrase=phrase,
                boxes=[box],
                task=task,
                split=str(ref.get("split", "train")),
                source=source,
                license=LICENSE,
                meta={"ref_id": ref.get("ref_id"), "ann_id": ref.get("ann_id"), "image_id": ref.get("image_id")},
            )
