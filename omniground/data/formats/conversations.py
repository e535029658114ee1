"""Conversation JSON: LLaVA-style instruction data and the original GroundingGPT training files.

Both are a JSON list of {"id", "image" | "video" | "sound": <path under the media folder>,
"conversations": [{"from": "human" | "gpt", "value": "..."}]} (LLaVA's LazySupervisedDataset and
GroundingGPT's lego/train/train.py read exactly these keys). Media paths are taken under
--media-root.

Locations inside the text are rewritten into our frame and notation (through omniground.grounding):
- GroundingGPT (`groundinggpt`): boxes `[x1,y1,x2,y2]` 0..1 of the image padded to a centred square
  (3 decimals), mapped back to the original image with `Box.from_padded_square` (image size read
  from the file); spans `{t1,t2}` fractions of the duration (2 decimals); `<sound>` becomes `<audio>`.
- LLaVA (`llava`): boxes 0..1; LLaVA-1.5's mix is known to be inconsistent (VG boxes relative to the
  padded square, RefCOCO ones to the image; haotian-liu/LLaVA issues 606, 822), so the frame is an
  option: --box-frame image (default) or padded.
Every box/span found in an assistant turn becomes a label, so the schema's check holds. A record
whose boxes need the image size while the image is missing is skipped with that reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from omniground.data.formats.base import AUDIO_EXTS, Context, FormatError, Skip, load_json
from omniground.data.schema import PLACEHOLDER, Media, Sample
from omniground.grounding import Box, Located, format_box, format_span, parse, replace_located

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
MEDIA_KEYS = (("image", "image"), ("video", "video"), ("sound", "audio"), ("audio", "audio"))
LICENSE = {
    "llava": "CC BY 4.0 (LLaVA data; also subject to the generator's terms); images: source terms",
    "groundinggpt": "GroundingGPT data: see source terms; media: each source dataset's terms",
}


def _media_list(ctx: Context, rec: dict) -> tuple[list[Media], str | None]:
    out = []
    for key, type in MEDIA_KEYS:
        if key not in rec or rec[key] in (None, ""):
            continue
        values = rec[key] if isinstance(rec[key], list) else [rec[key]]
        # The original keeps images, videos and sounds in separate folders (--image-folder, --video-folder,
        # --sound-folder of lego/train/train.py): --image-root/--video-root/--audio-root override --media-root.
        root = ctx.options.get(f"{type}_root")
        for v in values:
            path = Path(root) / str(v) if root else ctx.media_path(str(v))
            if type == "audio" and not path.suffix:
                path = ctx.find(str(v), AUDIO_EXTS, str(root) if root else "")
            m, why = ctx.media(path, type)
            if m is None:
                return [], why
            out.append(m)
    return out, None


def _task(media: list[Media], n_pairs: int, user_boxes: int, asst_boxes: int, asst_spans: int) -> str:
    types = {m.type for m in media}
    if n_pairs > 1:
        return "dialogue"
    if "image" in types and "audio" in types and asst_boxes:
        return "sound_localization"
    if asst_spans:
        return "audio_grounding" if types == {"audio"} else "video_grounding"
    if asst_boxes:
        return "grounded_caption" if asst_boxes > 1 else "rec"
    if user_boxes:
        return "reg"
    return "vqa"


_STAGE = {"caption": 1, "dialogue": 3, "vqa": 3}


def convert_records(ctx: Context, kind: str) -> Iterator[Sample | Skip]:
    padded = kind == "groundinggpt" or ctx.options.get("box_frame") == "padded"
    for path in ctx.inputs:
        records = load_json(path)
        if not isinstance(records, list):
            raise FormatError(f"{path}: expected a JSON list of {{id, image/video/sound, conversations}}")
        for n, rec in enumerate(records):
            yield _record(ctx, kind, rec, f"{kind}-{rec.get('id', n) if isinstance(rec, dict) else n}", padded)


def _record(ctx: Context, kind: str, rec: dict, rid: str, padded: bool) -> Sample | Skip:
    if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
        return Skip("record has no conversations list", rid)
    media, why = _media_list(ctx, rec)
    if why:
        return Skip(why, rid)
    image = next((m for m in media if m.type == "image"), None)
    timed = next((m for m in media if m.type in ("video", "audio")), None)
    size = (image.width, image.height) if image and image.width else None

    turns, labels_b, labels_s = [], [], []
    user_boxes = 0
    for t in rec["conversations"]:
        role = ROLES.get(str(t.get("from", "")).lower()) if isinstance(t, dict) else None
        if role is None:
            return Skip("turn with unknown speaker", rid)
        text = str(t.get("value", "")).replace("<sound>", PLACEHOLDER["audio"])
        parsed = parse(text, image_size=size, duration=timed.duration if timed else None,
                       box_frame="norm1", span_unit="fraction")
        found, problems = parsed.located, parsed.problems
        if problems and role == "assistant":  # the schema refuses them; a user's odd `[1, 2]` is kept as text
            return Skip(f"malformed location in answer: {problems[0].split(': ', 1)[-1]}", rid)
        if any(isinstance(f.item, Box) for f in found):
            if image is None:
                return Skip("boxes in text but no image", rid)
            if size is None:
                return Skip("image missing: its size is needed to place the boxes", rid)
        if padded and size is not None:
            found = [Located(f.start, f.end, Box.from_padded_square(f.item.xyxy, *size)) if isinstance(f.item, Box)
                     else f for f in found]
        text = replace_located(text, found, lambda f: format_box(f.item) if isinstance(f.item, Box) else format_span(f.item))
        if role == "assistant":
            phrased = parse(text, image_size=size)
            labels_b += [{"phrase": b.phrase, "box": b.xyxy, "media": media.index(image)} for b in phrased.boxes]
            if phrased.spans and timed is None:
                return Skip("time spans in text but no video or audio", rid)
            labels_s += [{"phrase": s.phrase, "start": s.start * timed.duration, "end": s.end * timed.duration,
                          "media": media.index(timed)} for s in phrased.spans]
        elif role == "user":
            user_boxes += sum(isinstance(f.item, Box) for f in found)
        turns.append({"role": role, "content": text})
    if not any(t["role"] == "user" for t in turns):
        return Skip("no human turn", rid)
    first_user = next(t for t in turns if t["role"] == "user")
    for m in media:
        if not any(PLACEHOLDER[m.type] in t["content"] for t in turns if t["role"] == "user"):
            first_user["content"] = PLACEHOLDER[m.type] + "\n" + first_user["content"]
    n_pairs = sum(t["role"] == "assistant" for t in turns)
    task = ctx.options.get("task") or _task(media, n_pairs, user_boxes, len(labels_b), len(labels_s))
    stage = int(ctx.options.get("stage") or _STAGE.get(task, 2))
    return ctx.sample(
        id=rid, media=media, conversation=turns, boxes=_dedupe(labels_b), spans=_dedupe(labels_s), task=task,
        stage=stage, source=kind, license=ctx.options.get("license") or LICENSE[kind],
        split=str(rec.get("split", "train")), meta={"original_id": rec.get("id")} if "id" in rec else {},
    )


def _dedupe(labels: list[dict]) -> list[dict]:
    seen, out = set(), []
    for lab in labels:
        key = tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in lab.items()))
        if key not in seen:
            seen.add(key)
            out.append(lab)
    return out


def convert_llava(ctx: Context) -> Iterator[Sample | Skip]:
    return convert_records(ctx, "llava")


def convert_groundinggpt(ctx: Context) -> Iterator[Sample | Skip]:
    return convert_records(ctx, "groundinggpt")
