"""Samples for one phrase and its box(es) on one image: REC (phrase -> box) or REG (box -> phrase)."""

from __future__ import annotations

from omniground.data.formats.base import Context, FormatError, Skip, single_turn
from omniground.data.schema import Media, Sample
from omniground.grounding import Box

BOX_TASKS = ("rec", "reg")


def box_sample(
    ctx: Context,
    *,
    id: str,
    media: Media,
    phrase: str,
    boxes: list[Box],
    task: str,
    split: str,
    source: str,
    license: str,
    meta: dict | None = None,
) -> Sample | Skip:
    phrase = " ".join(phrase.split())
    if not phrase:
        return Skip("empty phrase", id)
    if any(b.area <= 0 for b in boxes):
        return Skip("empty box (zero width or height inside the image)", id)
    conversation = single_turn(ctx, task, id, [media], id, phrase=phrase, items=boxes)
    return ctx.sample(
        id=id,
        media=[media],
        conversation=conversation,
        boxes=[{"phrase": phrase, "box": b.xyxy} for b in boxes],
        task=task,
        stage=2,
        source=source,
        license=ctx.options.get("license") or license,
        split=split,
        meta=meta or {},
    )


def task_option(ctx: Context) -> str:
    task = ctx.options.get("task") or "rec"
    if task not in BOX_TASKS:
        raise FormatError(f"--task must be one of {', '.join(BOX_TASKS)} for this format, got {task!r}")
    return task
