"""Image scenes: emoji objects pasted on photo crops, with referring expressions that pick exactly one.

Boxes are exact by construction. Objects are pasted back to front; after all pastes every pixel
belongs to the top-most object whose (resized, rotated) alpha there is >= 50%, and an object's box
is the tight box of the pixels it owns. A scene is re-drawn when any object keeps less than
MIN_VISIBLE of its own pixels, so occlusion is partial, never total. Boxes are pixel edges
(x2 = last owned column + 1) normalised by the image size.

Referring expressions (kinds) and the rule that makes each one name exactly one object:
  category  "the cat"                     the only cat in the scene
  colour    "the red cat"                 >= 2 cats; exactly one tinted red, no other that looks red
                                          (tinted so, or red by nature: assets.natural_colours)
  size      "the big cat" / "small"       >= 2 cats; its box area >= 2x (<= 1/2x) every other cat's
  position  "the cat at the top left"     the only cat whose box centre lies in that third of the
                                          image grid, at least GRID_MARGIN from the grid lines
  ordinal   "the second cat from the left" >= 2 cats ranked by box centre; neighbours on that axis
                                          at least ORDINAL_GAP apart
  relation  "the cat to the left of the dog"  one dog; exactly one cat wholly on that side of the
                                          dog's box (x2 <= dog.x1 ...), every other cat's centre
                                          on the other side of the dog's centre
Scenes are planned for the wanted kind (same-category distractors first), then every candidate
expression is checked against these rules; a plan with none is re-drawn.

Tasks per stage: 1 caption (objects named, no boxes); 2 REC with one of the six kinds, REG (box in the
question, expression in the answer), grounded caption (every object with its box) and negatives
(a present category in a colour none of its instances has, or an absent one in any expression kind's
form, asked with REC's questions);
sound localization (the picture plus a clip of the sound one object in it makes: a bell, an alarm
clock, a phone or a camera, its category once in the scene); 3 a dialogue of 2..4 of these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
from PIL import Image

from omniground.data import instruct
from omniground.data.schema import BoxLabel, Media, Sample
from omniground.data.synth import assets
from omniground.data.synth.audio import single_sound
from omniground.data.synth.common import HELD_OUT, choice, media_path, pick_stage, record, text_rng, weighted
from omniground.files import atomic_output
from omniground.grounding import Box, ground_phrase

MIN_VISIBLE = 0.6
ALPHA_OPAQUE = 128
GRID_MARGIN = 0.03
ORDINAL_GAP = 0.06
SIZE_RATIO = 2.0
REC_KINDS = ("category", "colour", "size", "position", "ordinal", "relation")
PLAN_ATTEMPTS = 400  # scenes planned for one sample before giving up (`make_image_sample`)
TASK_WEIGHTS = {
    "category": 0.10,
    "colour": 0.12,
    "size": 0.10,
    "position": 0.12,
    "ordinal": 0.12,
    "relation": 0.16,
    "grounded_caption": 0.12,
    "negative": 0.12,
    "reg": 0.08,
    "sound_localization": 0.06,
}
UNSEEN_WEIGHTS = {"relation": 0.6, "colour": 0.4}
ASPECTS = ((1, 1), (4, 3), (3, 4), (16, 9))
CELL_NAMES = {
    (0, 0): "top left",
    (1, 0): "top",
    (2, 0): "top right",
    (0, 1): "left",
    (1, 1): "center",
    (2, 1): "right",
    (0, 2): "bottom left",
    (1, 2): "bottom",
    (2, 2): "bottom right",
}
RELATIONS = ("to the left of", "to the right of", "above", "below")
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh")
EXTREMES = {"left": "leftmost", "right": "rightmost", "top": "topmost", "bottom": "lowest"}
NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight")


@dataclass
class SceneObject:
    name: str
    colour: str | None
    size: int  # longest side in pixels before rotation
    angle: float  # degrees, counter-clockwise
    x: int = 0  # top-left of the rotated sprite's canvas
    y: int = 0
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # owned pixels: x1, y1, x2, y2 (exclusive)
    visible: float = 1.0  # share of its own opaque pixels still on top

    @property
    def description(self) -> str:
        return f"{self.colour} {self.name}" if self.colour else self.name


@dataclass
class Scene:
    width: int
    height: int
    background: dict  # file, crop (normalised x1,y1,x2,y2), flip
    objects: list[SceneObject] = field(default_factory=list)  # back to front

    def norm_box(self, i: int) -> Box:
        return Box.from_pixels(self.objects[i].box, self.width, self.height)

    def centre(self, i: int) -> tuple[float, float]:
        x1, y1, x2, y2 = self.objects[i].box
        return ((x1 + x2) / 2 / self.width, (y1 + y2) / 2 / self.height)

    def to_meta(self) -> dict:
        return {"width": self.width, "height": self.height, "background": self.background,
                "objects": [asdict(o) for o in self.objects]}  # fmt: skip


@dataclass(frozen=True)
class Expression:
    kind: str
    phrase: str  # without the leading "the"
    target: int
    params: dict  # what a checker needs to re-evaluate the rule from the scene metadata


# --------------------------------------------------------------------------------------------------
# Rendering


def sprite(obj: SceneObject) -> Image.Image:
    """The object's RGBA sprite as pasted: tinted, resized to its size, rotated (canvas expanded)."""
    im = assets.tint(assets.object_sprite(obj.name), obj.colour)
    w, h = im.size
    scale = obj.size / max(w, h)
    im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    return im.rotate(obj.angle, resample=Image.Resampling.BICUBIC, expand=True) if obj.angle else im


def place(scene: Scene, sprites: list[Image.Image], rng: np.random.Generator, tries: int = 20) -> bool:
    """Choose positions so that every object keeps >= MIN_VISIBLE of itself; set boxes. False if none found."""
    masks = [np.asarray(s)[..., 3] >= ALPHA_OPAQUE for s in sprites]  # (h, w) bool each
    for _ in range(tries):
        owner = np.full((scene.height, scene.width), -1, np.int16)  # (H, W) top-most object index
        for k, (obj, m) in enumerate(zip(scene.objects, masks)):
            h, w = m.shape
            obj.x = int(rng.integers(0, scene.width - w + 1))
            obj.y = int(rng.integers(0, scene.height - h + 1))
            owner[obj.y : obj.y + h, obj.x : obj.x + w][m] = k
        ok = True
        for k, (obj, m) in enumerate(zip(scene.objects, masks)):
            ys, xs = np.nonzero(owner == k)
            obj.visible = len(xs) / max(1, int(m.sum()))
            if obj.visible < MIN_VISIBLE:
                ok = False
                break
            obj.box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        if ok:
            return True
    return False


def render_scene(scene: Scene, sprites: list[Image.Image] | None = None) -> Image.Image:
    bg = scene.background
    im = assets.background(bg["file"], tuple(bg["crop"]), (scene.width, scene.height), bg["flip"]).convert("RGBA")
    for obj, sp in zip(scene.objects, sprites or [sprite(o) for o in scene.objects]):
        # Binary alpha: a pixel is the object's exactly where the box computation says it is.
        a = (np.asarray(sp)[..., 3] >= ALPHA_OPAQUE).astype(np.uint8) * 255
        im.paste(sp, (obj.x, obj.y), Image.fromarray(a, "L"))
    return im.convert("RGB")


def random_background(rng: np.random.Generator) -> dict:
    bg = choice(rng, assets.BACKGROUNDS)
    side = float(rng.uniform(0.5, 1.0))
    x1, y1 = float(rng.uniform(0, 1 - side)), float(rng.uniform(0, 1 - side))
    return {"file": bg.file, "crop": [round(x1, 4), round(y1, 4), round(x1 + side, 4), round(y1 + side, 4)],
            "flip": bool(rng.random() < 0.5)}  # fmt: skip


def image_size(rng: np.random.Generator, longest: int) -> tuple[int, int]:
    a, b = choice(rng, ASPECTS)
    return (longest, round(longest * b / a)) if a >= b else (round(longest * a / b), longest)


# --------------------------------------------------------------------------------------------------
# Expressions: one function per kind, each returning every expression of that kind that names
# exactly one object (the rules of the module docstring).


def _by_name(scene: Scene) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, o in enumerate(scene.objects):
        out.setdefault(o.name, []).append(i)
    return out


def _area(scene: Scene, i: int) -> int:
    x1, y1, x2, y2 = scene.objects[i].box
    return (x2 - x1) * (y2 - y1)


def expression_phrase(
    kind: str,
    name: str,
    *,
    colour: str | None = None,
    size: str | None = None,
    cell: tuple[int, int] | None = None,
    side: str | None = None,
    rank: int = 0,
    relation: str | None = None,
    anchor_words: str | None = None,
) -> str:
    """The words of a `kind` expression for `name`. Expressions and absent phrases (negatives) both write
    theirs here, so a phrase's form never tells whether it names something."""
    if kind == "colour":
        return f"{colour} {name}"
    if kind == "size":
        return f"{size} {name}"
    if kind == "position":
        return f"{name} at the {CELL_NAMES[cell]}"
    if kind == "ordinal":
        return f"{EXTREMES[side]} {name}" if rank == 0 else f"{ORDINALS[rank]} {name} from the {side}"
    if kind == "relation":
        return f"{name} {relation} the {anchor_words}"
    return name


def category_expressions(scene: Scene) -> list[Expression]:
    return [Expression("category", n, ids[0], {"name": n}) for n, ids in _by_name(scene).items() if len(ids) == 1]


def colour_expressions(scene: Scene) -> list[Expression]:
    out = []
    for n, ids in _by_name(scene).items():
        if len(ids) < 2:
            continue
        for i in ids:
            c = scene.objects[i].colour  # tinted c, and no other of its kind looks c (tinted or by nature)
            if c and not any(c in assets.looks(n, scene.objects[j].colour) for j in ids if j != i):
                out.append(Expression("colour", expression_phrase("colour", n, colour=c), i, {"name": n, "colour": c}))
    return out


def size_expressions(scene: Scene) -> list[Expression]:
    out = []
    for n, ids in _by_name(scene).items():
        if len(ids) < 2:
            continue
        for i in ids:
            others = [_area(scene, j) for j in ids if j != i]
            if _area(scene, i) >= SIZE_RATIO * max(others):
                out.append(Expression("size", expression_phrase("size", n, size="big"), i, {"name": n, "size": "big"}))
            elif _area(scene, i) * SIZE_RATIO <= min(others):
                out.append(
                    Expression("size", expression_phrase("size", n, size="small"), i, {"name": n, "size": "small"})
                )
    return out


def grid_cell(cx: float, cy: float) -> tuple[int, int]:
    """(column, row) of a normalised centre in the 3x3 grid."""
    return (min(2, int(cx * 3)), min(2, int(cy * 3)))


def near_grid_line(cx: float, cy: float) -> bool:
    return any(min(abs(v - 1 / 3), abs(v - 2 / 3)) < GRID_MARGIN for v in (cx, cy))


def position_expressions(scene: Scene) -> list[Expression]:
    out = []
    for n, ids in _by_name(scene).items():
        for i in ids:
            cell = grid_cell(*scene.centre(i))
            if near_grid_line(*scene.centre(i)) or any(grid_cell(*scene.centre(j)) == cell for j in ids if j != i):
                continue
            phrase = expression_phrase("position", n, cell=cell)
            out.append(Expression("position", phrase, i, {"name": n, "cell": list(cell)}))
    return out


def ordinal_expressions(scene: Scene) -> list[Expression]:
    out = []
    for n, ids in _by_name(scene).items():
        if len(ids) < 2:
            continue
        for side, axis, reverse in (("left", 0, False), ("right", 0, True), ("top", 1, False), ("bottom", 1, True)):
            ranked = sorted(ids, key=lambda i: scene.centre(i)[axis], reverse=reverse)
            coords = [scene.centre(i)[axis] for i in ranked]
            if min(abs(a - b) for a, b in pairwise(coords)) < ORDINAL_GAP:
                continue
            for rank, i in enumerate(ranked):
                phrase = expression_phrase("ordinal", n, side=side, rank=rank)
                out.append(Expression("ordinal", phrase, i, {"name": n, "side": side, "rank": rank}))
    return out


def relation_holds(scene: Scene, i: int, anchor: int, relation: str) -> bool:
    """Object i lies wholly on the `relation` side of the anchor's box."""
    a, b = scene.objects[i].box, scene.objects[anchor].box
    return {"to the left of": a[2] <= b[0], "to the right of": a[0] >= b[2], "above": a[3] <= b[1],
            "below": a[1] >= b[3]}[relation]  # fmt: skip


def _clearly_not(scene: Scene, i: int, anchor: int, relation: str) -> bool:
    (cx, cy), (ax, ay) = scene.centre(i), scene.centre(anchor)
    return {"to the left of": cx > ax, "to the right of": cx < ax, "above": cy > ay, "below": cy < ay}[relation]


def relation_expressions(scene: Scene) -> list[Expression]:
    out = []
    groups = _by_name(scene)
    for anchor_name, anchor_ids in groups.items():
        if len(anchor_ids) != 1:
            continue
        anchor = anchor_ids[0]
        for n, ids in groups.items():
            if n == anchor_name:
                continue
            for rel in RELATIONS:
                holds = [i for i in ids if relation_holds(scene, i, anchor, rel)]
                if len(holds) == 1 and all(_clearly_not(scene, j, anchor, rel) for j in ids if j != holds[0]):
                    words = scene.objects[anchor].description
                    phrase = expression_phrase("relation", n, relation=rel, anchor_words=words)
                    params = {"name": n, "relation": rel, "anchor": anchor_name}
                    out.append(Expression("relation", phrase, holds[0], params))
    return out


EXPRESSIONS = {
    "category": category_expressions,
    "colour": colour_expressions,
    "size": size_expressions,
    "position": position_expressions,
    "ordinal": ordinal_expressions,
    "relation": relation_expressions,
}


def allowed(expr: Expression, scene: Scene, unseen: bool) -> bool:
    """Split rule: a held-out combination appears in split "unseen" and only there."""
    if expr.kind == "relation":
        held = {expr.params["name"], expr.params["anchor"]} & HELD_OUT.relation_objects
        return bool(held) if unseen else not held
    if expr.kind == "colour":
        held = (expr.params["name"], expr.params["colour"]) in HELD_OUT.colour_pairs
        return held if unseen else not held
    return not unseen


# --------------------------------------------------------------------------------------------------
# Planning a scene for a task


def _colour_for(rng: np.random.Generator, name: str, unseen: bool, p_tint: float = 0.35) -> str | None:
    if rng.random() >= p_tint:
        return None
    options = [c for c in assets.COLOURS if unseen or (name, c) not in HELD_OUT.colour_pairs]
    return choice(rng, options)


def plan_scene(rng: np.random.Generator, task: str, longest: int, unseen: bool) -> Scene:
    width, height = image_size(rng, longest)
    bg = random_background(rng)
    excluded = set(assets.BACKGROUND_BY_FILE[bg["file"]].contains)
    pool = [o.name for o in assets.OBJECTS if o.name not in excluded]
    if task == "relation" and not unseen:
        pool = [n for n in pool if n not in HELD_OUT.relation_objects]
    n_objects = int(rng.integers(3, 8))
    names: list[str] = []
    colours: list[str | None] = []

    target = choice(rng, pool)
    if task == "sound_localization":
        target = choice(rng, [n for n in assets.SOUNDING_OBJECTS if n in pool])
    if task == "relation" and unseen:
        target = choice(rng, sorted(HELD_OUT.relation_objects - excluded))
    if task == "colour" and unseen:
        target, held_colour = choice(rng, sorted(p for p in HELD_OUT.colour_pairs if p[0] not in excluded))
    few = int(rng.integers(1, 3))
    copies = {"category": 1, "sound_localization": 1, "caption": few, "grounded_caption": few, "negative": few}.get(
        task, int(rng.integers(2, 5))
    )
    names += [target] * copies
    if task == "colour":  # every instance a different colour (or none), so colour alone decides
        palette = [c for c in assets.COLOURS if unseen or (target, c) not in HELD_OUT.colour_pairs]
        if unseen:
            palette = [held_colour] + [c for c in palette if c != held_colour]
            picked = [held_colour] + [palette[1 + int(i)] for i in rng.permutation(len(palette) - 1)[: copies - 1]]
        else:
            picked = [palette[int(i)] for i in rng.permutation(len(palette))[:copies]]
        colours += picked
    else:
        colours += [_colour_for(rng, target, False) for _ in range(copies)]
    if task == "relation":  # one anchor of another category
        anchor = choice(rng, [n for n in pool if n != target])
        names.append(anchor)
        colours.append(_colour_for(rng, anchor, False))
    others = [n for n in pool if n != target and n not in names]
    while len(names) < max(n_objects, copies + 1):
        n = choice(rng, others)
        k = 2 if rng.random() < 0.2 else 1
        names += [n] * k
        colours += [_colour_for(rng, n, False) for _ in range(k)]

    # Smaller objects in busier scenes, so that most plans fit without hiding anything.
    base = min(width, height) * float(np.clip(0.55 / np.sqrt(len(names)), 0.12, 0.3))
    sizes = [base * float(rng.uniform(0.7, 1.3)) for _ in names]
    if task == "size":
        big = int(rng.integers(copies))
        factor = float(rng.uniform(1.6, 1.9)) if rng.random() < 0.5 else float(rng.uniform(0.5, 0.62))
        sizes[big] = sizes[big] * factor
    objects = [
        SceneObject(n, c, max(16, round(s)), float(rng.uniform(-25, 25)) if rng.random() < 0.5 else 0.0)
        for n, c, s in zip(names, colours, sizes)
    ]
    order = rng.permutation(len(objects))  # depth order, so the target is not always at the back
    return Scene(width, height, bg, [objects[int(i)] for i in order])


# --------------------------------------------------------------------------------------------------
# Sample building


def _article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def grounded_caption(scene: Scene, grounded: bool = True) -> tuple[str, list[BoxLabel]]:
    """'A picture of grass with two cats[..][..] and a red apple[..].' Groups ordered left to right.

    With grounded=False the same sentence without boxes (a stage-1 caption) and no labels.
    """
    order = sorted(range(len(scene.objects)), key=lambda i: scene.centre(i)[0])
    groups: dict[str, list[int]] = {}
    for i in order:
        groups.setdefault(scene.objects[i].description, []).append(i)
    parts, labels = [], []
    for desc, ids in groups.items():
        obj = scene.objects[ids[0]]
        plural = assets.OBJECT_BY_NAME[obj.name].plural
        words = (
            _article(desc) if len(ids) == 1 else f"{NUMBERS[len(ids)]} {obj.colour + ' ' if obj.colour else ''}{plural}"
        )
        boxes = [scene.norm_box(i) for i in ids] if grounded else []
        parts.append(ground_phrase(words, boxes))
        labels += [BoxLabel(phrase=desc, box=b.xyxy) for b in boxes]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    bg = assets.BACKGROUND_BY_FILE[scene.background["file"]].description
    return f"A picture of {bg} with {listed}.", labels


@dataclass
class Absent:
    """A phrase that names nothing in the scene: `name` in `colour` (None: any colour) is not there."""

    phrase: str
    name: str
    colour: str | None = None


def negative_phrase(scene: Scene, rng: np.random.Generator, unseen: bool) -> Absent:
    """A present category in a colour none of its instances has (hard negative), or an absent category
    in the form of one of the six expression kinds ("the second guitar from the left"): with bare or
    coloured categories only, a phrase's form alone told the model to decline (long phrases never
    were absent), and it learned that instead of looking."""
    present = _by_name(scene)
    if rng.random() < 0.4:
        name = choice(rng, sorted(present))
        used = set().union(*(assets.looks(name, scene.objects[i].colour) for i in present[name]))
        free = [c for c in assets.COLOURS if c not in used and (unseen or (name, c) not in HELD_OUT.colour_pairs)]
        if free:
            colour = choice(rng, free)
            return Absent(f"{colour} {name}", name, colour)
    excluded = set(present) | set(assets.BACKGROUND_BY_FILE[scene.background["file"]].contains)
    name = choice(rng, [o.name for o in assets.OBJECTS if o.name not in excluded])
    kind = weighted(rng, {k: TASK_WEIGHTS[k] for k in REC_KINDS})
    if kind == "colour":
        colour = choice(rng, [c for c in assets.COLOURS if unseen or (name, c) not in HELD_OUT.colour_pairs])
        return Absent(expression_phrase("colour", name, colour=colour), name, colour)
    if kind == "size":
        return Absent(expression_phrase("size", name, size=choice(rng, ("big", "small"))), name)
    if kind == "position":
        return Absent(expression_phrase("position", name, cell=choice(rng, sorted(CELL_NAMES))), name)
    if kind == "ordinal":
        side, rank = choice(rng, sorted(EXTREMES)), int(rng.integers(3))
        return Absent(expression_phrase("ordinal", name, side=side, rank=rank), name)
    if kind == "relation" and (unseen or name not in HELD_OUT.relation_objects):
        # one-of-a-kind anchors, as in relation_expressions; held-out relation objects only in split "unseen"
        anchors = [
            ids[0] for n, ids in present.items() if len(ids) == 1 and (unseen or n not in HELD_OUT.relation_objects)
        ]
        if anchors:
            words = scene.objects[choice(rng, anchors)].description
            return Absent(
                expression_phrase("relation", name, relation=choice(rng, RELATIONS), anchor_words=words), name
            )
    return Absent(name, name)


def _pick_expression(rng: np.random.Generator, scene: Scene, kind: str, unseen: bool) -> Expression | None:
    """An expression of `kind` that names one object, preferring categories with same-category distractors."""
    candidates = [e for e in EXPRESSIONS[kind](scene) if allowed(e, scene, unseen)]
    crowded = [e for e in candidates if len(_by_name(scene)[e.params["name"]]) >= 2]
    return choice(rng, crowded or candidates) if candidates else None


def _dialogue(
    rng: np.random.Generator, scene: Scene, first: Expression
) -> tuple[list[tuple[str, dict]], list[Expression]]:
    """2..4 (template, slots) turns about one scene: the planned expression, then other kinds of question."""
    others = [e for kind in REC_KINDS for e in EXPRESSIONS[kind](scene) if allowed(e, scene, False)]
    others = [e for e in others if e.target != first.target]
    turns = [("rec", {"phrase": first.phrase, "items": [scene.norm_box(first.target)]})]
    used = [first]
    for _ in range(int(rng.integers(1, 4))):
        move = weighted(rng, {"rec": 0.45, "reg": 0.25, "negative": 0.15, "grounded_caption": 0.15})
        fresh = [e for e in others if all(e.target != u.target for u in used)]
        if move in ("rec", "reg") and fresh:
            e = choice(rng, fresh)
            used.append(e)
            turns.append((move, {"phrase": e.phrase, "items": [scene.norm_box(e.target)]}))
        elif move == "grounded_caption" and all(t != "grounded_caption" for t, _ in turns):
            turns.append(("grounded_caption", {"caption": grounded_caption(scene)[0]}))
        else:
            turns.append(("negative", {"phrase": negative_phrase(scene, rng, False).phrase}))
    return turns, used


def make_image_sample(rng: np.random.Generator, sample_id: str, out_dir: Path, cfg) -> Sample:
    """One image sample: plan and place a scene for a task, render it, write it, and say what it shows."""
    unseen = cfg.split == "unseen"
    stage = pick_stage(rng, cfg.stages, cfg.split)
    if stage == 2:
        task = weighted(rng, UNSEEN_WEIGHTS if unseen else TASK_WEIGHTS)
    else:
        task = {1: "caption", 3: "dialogue"}[stage]
    # The expression kind a scene is planned for: REC and REG tasks and dialogues need one.
    kind = task if task in REC_KINDS else weighted(rng, {k: TASK_WEIGHTS[k] for k in REC_KINDS})
    needs_expression = task in REC_KINDS or task in ("reg", "dialogue")
    # At 64 px most size plans fail (objects are at least 16 px, which evens out their sizes; about 15%
    # succeed), and now and then all of 60 tries did (seed 9's image 1687). A sample's own random stream
    # keeps every sample that succeeded within 60 tries as it was.
    for _attempt in range(PLAN_ATTEMPTS):
        scene = plan_scene(rng, kind if needs_expression else task, cfg.image_size, unseen)
        sprites = [sprite(o) for o in scene.objects]
        if not place(scene, sprites, rng):
            continue
        expr = _pick_expression(rng, scene, kind, unseen) if needs_expression else None
        if expr is None and needs_expression:
            continue
        break
    else:
        raise RuntimeError(f"{sample_id}: no scene for task {task} after {PLAN_ATTEMPTS} plans")

    rel_path = media_path(sample_id, "image", cfg.image_format)
    with atomic_output(out_dir / rel_path) as tmp:
        render_scene(scene, sprites).save(tmp, format="PNG" if cfg.image_format == "png" else "JPEG", quality=92)
    media = Media(type="image", path=rel_path, width=scene.width, height=scene.height)

    trng = text_rng(rng)
    meta: dict = {"scene": scene.to_meta()}
    labels: list[BoxLabel] = []
    if task in REC_KINDS or task == "reg":
        box = scene.norm_box(expr.target)
        pairs = [instruct.render("rec" if task in REC_KINDS else "reg", trng, phrase=expr.phrase, items=[box])]
        labels = [BoxLabel(phrase=expr.phrase, box=box.xyxy)]
        meta["expression"] = {"kind": expr.kind, "target": expr.target, **expr.params}
        schema_task = "rec" if task in REC_KINDS else "reg"
    elif task in ("caption", "grounded_caption"):
        caption, labels = grounded_caption(scene, grounded=task == "grounded_caption")
        pairs = [instruct.render("caption_image" if task == "caption" else task, trng, caption=caption)]
        schema_task = task
    elif task == "sound_localization":  # the picture, and a clip of the sound one object in it makes
        names = [o.name for o in scene.objects]
        target = choice(rng, [i for i, n in enumerate(names) if n in assets.SOUNDING_OBJECTS and names.count(n) == 1])
        name = scene.objects[target].name
        box = scene.norm_box(target)
        clip, meta["sound"] = single_sound(
            rng,
            assets.SOUNDING_OBJECTS[name],
            out_dir,
            media_path(sample_id, "audio", cfg.audio_format),
            cfg.audio_format,
        )
        media = [media, clip]
        pairs = [instruct.render("sound_localization", trng, phrase=name, items=[box])]
        labels = [BoxLabel(phrase=name, box=box.xyxy)]
        meta["target"] = target
        schema_task = "sound_localization"
    elif task == "negative":
        absent = negative_phrase(scene, rng, unseen)
        pairs = [instruct.render("negative", trng, phrase=absent.phrase)]
        meta["absent"], meta["absent_object"] = absent.phrase, {"name": absent.name, "colour": absent.colour}
        schema_task = "negative"
    else:
        turns, used = _dialogue(rng, scene, expr)
        pairs = instruct.dialogue(turns, trng)
        labels = [BoxLabel(phrase=e.phrase, box=scene.norm_box(e.target).xyxy) for e in used]
        if any(t == "grounded_caption" for t, _ in turns):
            labels += grounded_caption(scene)[1]
        meta["expressions"] = [{"kind": e.kind, "target": e.target, **e.params} for e in used]
        schema_task = "dialogue"
    return record(sample_id, media, pairs, schema_task, stage, cfg, boxes=labels, meta=meta)
