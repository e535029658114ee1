"""Flickr30k Entities (BryanPlummer/flickr30k_entities release) -> grounded captions.

Input: the release folder with `Sentences/<image_id>.txt`, `Annotations/<image_id>.xml` and,
optionally, `train.txt` / `val.txt` / `test.txt` (image ids per split).
- Sentences: one caption per line, entity mentions marked `[/EN#<entity_id>/<type>[/<type>] words]`,
  e.g. `[/EN#18/people A child] in [/EN#19/clothing a pink dress] is climbing ...`.
- Annotations: PASCAL-VOC-like XML: <size><width/><height/></size>, then <object>s, each with one or
  more <name>entity_id</name> and either <bndbox><xmin/><ymin/><xmax/><ymax/></bndbox> (1-based,
  inclusive pixel indices, as the release's utils.py treats them) or <nobndbox>/<scene>.
A pixel range xmin..xmax (1-based, inclusive) covers the continuous interval [xmin-1, xmax].
Each caption becomes one grounded caption in which every mention with boxes carries all of them
(`two men[..][..]`); mentions without a box (scene, notvisual) stay plain text.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

from omniground.data import instruct
from omniground.data.formats.base import Context, FormatError, Skip
from omniground.data.schema import Sample
from omniground.grounding import Box

LICENSE = "annotations: Flickr30k Entities terms; images: Flickr30k terms (non-commercial research)"
_MENTION = re.compile(r"\[/EN#(\d+)((?:/[^\s\]]+)+)\s+([^\]]+)\]")


def parse_sentence(line: str) -> list[str | tuple[str, str]]:
    """Plain text pieces and (entity_id, phrase) mentions, in order."""
    parts: list[str | tuple[str, str]] = []
    pos = 0
    for m in _MENTION.finditer(line):
        parts.append(line[pos : m.start()])
        parts.append((m.group(1), m.group(3).strip()))
        pos = m.end()
    parts.append(line[pos:])
    return parts


def parse_annotation(path: Path) -> tuple[int, int, dict[str, list[tuple[float, float, float, float]]]]:
    """(width, height, entity_id -> pixel xyxy boxes)."""
    root = ET.parse(path).getroot()
    size = root.find("size")
    if size is None:
        raise ValueError("no <size>")
    w, h = int(size.findtext("width")), int(size.findtext("height"))
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        for name in obj.findall("name"):
            boxes.setdefault(name.text.strip(), []).append((x1 - 1, y1 - 1, x2, y2))
    return w, h, boxes


def _tidy(text: str) -> str:
    text = " ".join(text.split())
    return re.sub(r"\s+([.,;:!?])", r"\1", text)


def _splits(folder: Path) -> dict[str, str]:
    out = {}
    for split in ("train", "val", "test"):
        f = folder / f"{split}.txt"
        if f.exists():
            out.update({line.strip(): split for line in f.read_text().split() if line.strip()})
    return out


def convert(ctx: Context) -> Iterator[Sample | Skip]:
    folder = ctx.inputs[0]
    sent_dir, ann_dir = folder / "Sentences", folder / "Annotations"
    if not sent_dir.is_dir() or not ann_dir.is_dir():
        raise FormatError(f"{folder}: expected Sentences/ and Annotations/ folders (Flickr30k Entities layout)")
    splits = _splits(folder)
    for sent_file in sorted(sent_dir.glob("*.txt")):
        image_id = sent_file.stem
        lines = [ln for ln in sent_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        try:
            w, h, pixel_boxes = parse_annotation(ann_dir / f"{image_id}.xml")
        except (OSError, ET.ParseError, ValueError, TypeError) as e:
            for n in range(len(lines)):
                yield Skip(f"no usable annotation XML ({type(e).__name__})", f"flickr30k-{image_id}-{n}")
            continue
        media, why = ctx.media(ctx.media_path(f"{image_id}.jpg"), "image", width=w, height=h)
        for n, line in enumerate(lines):
            sid = f"flickr30k-{image_id}-{n}"
            if media is None:
                yield Skip(why, sid)
                continue
            pieces: list = []
            labels = []
            for part in parse_sentence(line):
                if isinstance(part, str):
                    pieces.append(part)
                    continue
                entity, phrase = part
                boxes = [Box.from_pixels(b, w, h) for b in pixel_boxes.get(entity, [])]
                boxes = [b for b in boxes if b.area > 0]
                pieces.append((phrase, boxes) if boxes else phrase)
                labels += [{"phrase": phrase, "box": b.xyxy} for b in boxes]
            if not labels:
                yield Skip("caption has no boxed mention", sid)
                continue
            caption = _tidy(instruct.grounded_text(pieces))
            q, a = instruct.render("grounded_caption", ctx.rng(sid), caption=caption)
            yield ctx.sample(
                id=sid, media=[media], conversation=instruct.conversation([(q, a)], ["image"]), boxes=labels,
                task="grounded_caption", stage=2, source="flickr30k_entities",
                license=ctx.options.get("license") or LICENSE, split=splits.get(image_id, "train"),
                meta={"image_id": image_id, "sentence": n},
            )
