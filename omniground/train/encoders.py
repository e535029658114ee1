"""Stage 0: pre-train the from-scratch encoders on the generator's exact dense labels.

Why: trained only through the LM, the tiny model's from-scratch vision and audio encoders collapse to
media-independent output (measured in configs/omniground-tiny/README.md), so the LM never learns
*where*. The field's models start from pretrained encoders (CLIP, Whisper); none ships offline
(offline-assets.md), so we pre-train ours here, on labels the synthetic data knows exactly:
  image: for every patch, which object covers it (or background), that object's colour and box
         (FCOS-style: every covered patch regresses its object's box) -- so patch features carry what
         is where, and the LM only has to pick the patch the phrase names and read its box off;
  audio: for every encoder frame (20 ms), which sounds / spoken phrases are on.
Video frames go through the same vision tower, so they inherit the image pre-training.

The heads are thrown away, except the box regressor when the model has `region_boxes` (it is the
model's RegionPointer.box, which reads boxes off the patches the LM points at); the output is a whole omniground checkpoint (encoders pre-trained,
everything else as built) that stage 1 starts from. Run by `omniground train` with `stage: 0`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from omniground.data.synth import assets
from omniground.data.synth.images import Scene, SceneObject, ordinal_expressions, size_expressions
from omniground.files import atomic_output, drop_partial_outputs
from omniground.model.modeling_omniground import mirrored_boxes, pairwise_box_iou
from omniground.train.config import EncoderConfig
from omniground.train.data import TrainItem, load_sources

OBJECT_NAMES = [o.name for o in assets.OBJECTS]
COLOUR_NAMES = ["natural", *assets.COLOURS]  # "natural": the glyph's own colours


# --------------------------------------------------------------------------------------------------
# Dense targets from the generator's metadata


ORDER_SIDES = ("left", "right", "top", "bottom")  # `order`'s columns; a mirror swaps the first two
SIZES = ("alone", "big", "small", "neither")  # `size`'s classes: among the objects of its kind


def object_relations(scene: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per object, what the generator's ordinal and size expressions say of it (`ordinal_expressions`,
    `size_expressions`): `order` (n, 4) its rank among its kind from each of ORDER_SIDES, 3 for "fourth or
    later", 0 when it is the only one, -1 where two of its kind are too close on that axis to be ranked;
    `size` (n,) an index into SIZES."""
    objects = [SceneObject(o["name"], o.get("colour"), 0, 0.0, box=tuple(o["box"])) for o in scene["objects"]]
    s = Scene(scene["width"], scene["height"], {}, objects)  # the rules read names and boxes alone
    names = [o.name for o in s.objects]
    alone = np.array([names.count(n) == 1 for n in names])
    order = np.where(alone[:, None], 0, -1).repeat(len(ORDER_SIDES), 1)
    for e in ordinal_expressions(s):
        order[e.target, ORDER_SIDES.index(e.params["side"])] = min(e.params["rank"], 3)
    size = np.where(alone, SIZES.index("alone"), SIZES.index("neither"))
    for e in size_expressions(s):
        size[e.target] = SIZES.index(e.params["size"])
    return order.astype(np.int64), size.astype(np.int64)


def patch_targets(scene: dict, grid: int, pad_to_square: bool = True, relations: bool = False
                  ) -> dict[str, np.ndarray]:
    """Scene metadata -> per-patch targets in the model's square frame (the processor's padding).

    Returns `category` (g*g,) 0 = background, 1 + index into OBJECT_NAMES; `colour` (g*g,) index into
    COLOUR_NAMES (-1 on background); `box` (g*g, 4) the covering object's x1,y1,x2,y2 in [0,1]; with
    `relations`, also `order` (g*g, 4) and `size` (g*g,) of the covering object (`object_relations`; -1 on
    background). The covering object of a patch is the front-most one whose box holds the patch centre.
    """
    w, h = scene["width"], scene["height"]
    side = max(w, h) if pad_to_square else None
    category = np.zeros(grid * grid, np.int64)
    colour = np.full(grid * grid, -1, np.int64)
    box = np.zeros((grid * grid, 4), np.float32)
    if relations:
        obj_order, obj_size = object_relations(scene)
        order = np.full((grid * grid, len(ORDER_SIDES)), -1, np.int64)
        size = np.full(grid * grid, -1, np.int64)
    centres = (np.arange(grid) + 0.5) / grid  # patch centres, normalised
    for k, obj in enumerate(scene["objects"]):  # back to front: later objects overwrite
        x1, y1, x2, y2 = obj["box"]
        if side is not None:
            ox, oy = (side - w) // 2, (side - h) // 2
            b = np.array([(x1 + ox) / side, (y1 + oy) / side, (x2 + ox) / side, (y2 + oy) / side], np.float32)
        else:
            b = np.array([x1 / w, y1 / h, x2 / w, y2 / h], np.float32)
        cols = (centres >= b[0]) & (centres <= b[2])
        rows = (centres >= b[1]) & (centres <= b[3])
        cover = (rows[:, None] & cols[None, :]).reshape(-1)
        if not cover.any():  # smaller than a patch: the patch holding its centre
            c = min(int((b[0] + b[2]) / 2 * grid), grid - 1) + grid * min(int((b[1] + b[3]) / 2 * grid), grid - 1)
            cover = np.zeros(grid * grid, bool)
            cover[c] = True
        category[cover] = 1 + OBJECT_NAMES.index(obj["name"])
        colour[cover] = COLOUR_NAMES.index(obj["colour"] or "natural")
        box[cover] = b
        if relations:
            order[cover] = obj_order[k]
            size[cover] = obj_size[k]
    if relations:
        return {"category": category, "colour": colour, "box": box, "order": order, "size": size}
    return {"category": category, "colour": colour, "box": box}


def audio_label_key(event: dict) -> str:
    return f"{event['kind']}:{event['label']}"


def frame_targets(
    events: list[dict], starts: np.ndarray, frames: int, seconds_per_frame: float, vocab: dict[str, int]
) -> np.ndarray:
    """Events (start/end seconds) -> multi-hot (W, frames, len(vocab)): what is on at each frame's centre."""
    t = starts[:, None] + (np.arange(frames) + 0.5) * seconds_per_frame  # (W, frames)
    out = np.zeros((*t.shape, len(vocab)), np.float32)
    for e in events:
        k = vocab.get(audio_label_key(e))
        if k is not None:
            out[..., k] = np.maximum(out[..., k], (t >= e["start"]) & (t <= e["end"]))
    return out


# --------------------------------------------------------------------------------------------------
# Heads (discarded after pre-training)


class ImageHeads(nn.Module):
    """`box` may be the model's own regressor (RegionPointer.box): then it is trained here and kept."""

    def __init__(self, dim: int, box: nn.Module | None = None, relations: bool = False):
        super().__init__()
        self.category = nn.Linear(dim, 1 + len(OBJECT_NAMES))
        self.colour = nn.Linear(dim, len(COLOUR_NAMES))
        self.box = box if box is not None else nn.Linear(dim, 4)
        self.order = nn.Linear(dim, len(ORDER_SIDES) * 4) if relations else None  # ranks 0, 1, 2, 3+ per side
        self.size = nn.Linear(dim, len(SIZES)) if relations else None

    def loss(self, patches: torch.Tensor, t: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """patches (B, P, D); targets as `patch_targets`, batched."""
        cat_logits = self.category(patches)
        loss_cat = F.cross_entropy(cat_logits.flatten(0, 1), t["category"].flatten())
        on = t["category"] > 0  # (B, P)
        loss_col = F.cross_entropy(self.colour(patches)[on], t["colour"][on]) if on.any() else patches.sum() * 0
        boxes = torch.sigmoid(self.box(patches))[on]
        if on.any():  # L1 + GIoU with DETR's weights: L1 alone under-weights the small boxes' errors
            loss_box = F.l1_loss(boxes, t["box"][on])
            giou = pairwise_box_iou(boxes[:, None], t["box"][on], generalized=True)
        else:
            loss_box, giou = patches.sum() * 0, patches.new_ones(1, 1)
        with torch.no_grad():
            hit = (cat_logits.argmax(-1) == t["category"])[on].float().mean().item() if on.any() else 0.0
            # share of covered patches whose box alone would pass Acc@0.5: the ceiling of region boxes
            iou50 = (pairwise_box_iou(boxes[:, None], t["box"][on]) >= 0.5).float().mean().item() if on.any() else 0.0
        loss = loss_cat + loss_col + 5.0 * loss_box + 2.0 * (1 - giou).mean()
        info = {"object_patch_acc": hit, "box_l1": loss_box.item(), "box_iou50": iou50}
        if self.order is not None:  # targets -1 (background, unranked) are left out
            order = self.order(patches).unflatten(-1, (len(ORDER_SIDES), 4))
            size = self.size(patches)
            loss = loss + F.cross_entropy(order.flatten(0, 2), t["order"].flatten(), ignore_index=-1) \
                + F.cross_entropy(size.flatten(0, 1), t["size"].flatten(), ignore_index=-1)
            with torch.no_grad():
                for name, logits in (("order", order), ("size", size)):
                    known = t[name] >= 0
                    right = (logits.argmax(-1) == t[name])[known]
                    info[f"{name}_acc"] = right.float().mean().item() if known.any() else 0.0
        return loss, info


class AudioHeads(nn.Module):
    def __init__(self, dim: int, num_labels: int):
        super().__init__()
        self.labels = nn.Linear(dim, num_labels)

    def loss(self, frames: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """frames (B, T, D); target multi-hot (B, T, K)."""
        logits = self.labels(frames)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        with torch.no_grad():
            on = target > 0
            recall = ((logits > 0) & on).sum().item() / max(1, int(on.sum()))
            prec = ((logits > 0) & on).sum().item() / max(1, int((logits > 0).sum()))
        return loss, {"frame_recall": recall, "frame_precision": prec}


# --------------------------------------------------------------------------------------------------
# Data


@dataclass
class ImageSet:
    pixels: torch.Tensor  # (N, 3, S, S)
    targets: dict[str, torch.Tensor]  # category (N, P), colour (N, P), box (N, P, 4)[, order (N, P, 4), size (N, P)]

    def __len__(self) -> int:
        return len(self.pixels)

    def batch(self, idx: list[int], flip: list[bool]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        px = self.pixels[idx].clone()
        t = {k: v[idx].clone() for k, v in self.targets.items()}
        g = math.isqrt(t["category"].shape[1])
        f = torch.tensor(flip)
        if f.any():  # mirror: pixels, the patch grid, the boxes' x, and left and right in `order`
            px[f] = px[f].flip(-1)
            for k in t.keys() - {"box"}:
                v = t[k][f]
                t[k][f] = v.view(-1, g, g, *v.shape[2:]).flip(2).reshape(v.shape)
            if "order" in t:
                t["order"][f] = t["order"][f][..., [1, 0, 2, 3]]
            b = t["box"][f].view(-1, g, g, 4).flip(2).reshape(-1, g * g, 4)
            t["box"][f] = torch.where(t["category"][f][..., None] > 0, mirrored_boxes(b), b)  # background stays 0
        return px, t


def load_image_set(items: list[TrainItem], processor, grid: int, relations: bool = False) -> ImageSet | None:
    from omniground.media import load_image

    pixels, targets = [], {}
    pad = processor.config.aspect_mode == "pad"
    seen = set()
    for it in items:
        s = it.sample
        if not s.media or s.media[0].type != "image" or "scene" not in (s.meta or {}):
            continue
        path = it.media_paths[0]
        if path in seen:
            continue
        seen.add(path)
        pixels.append(torch.from_numpy(processor.image_tensor(load_image(path))))
        for k, v in patch_targets(s.meta["scene"], grid, pad, relations).items():
            targets.setdefault(k, []).append(torch.from_numpy(v))
    if not pixels:
        return None
    return ImageSet(torch.stack(pixels), {k: torch.stack(v) for k, v in targets.items()})


@dataclass
class AudioSet:
    windows: torch.Tensor  # (N_windows, n_mels, T) log-mel, every window of every clip
    targets: torch.Tensor  # (N_windows, T', K) multi-hot per encoder frame
    vocab: list[str]

    def __len__(self) -> int:
        return len(self.windows)


def load_audio_set(items: list[TrainItem], processor, frames: int, vocab: list[str] | None = None) -> AudioSet | None:
    """Every window of every distinct clip, with its frame targets; `vocab` (default: the labels these
    clips use, sorted) fixes the label order -- held-out clips take the training set's."""
    from omniground.media import load_audio

    chosen, seen = [], set()
    for it in items:
        s = it.sample
        if s.media and s.media[0].type == "audio" and "events" in (s.meta or {}) and it.media_paths[0] not in seen:
            seen.add(it.media_paths[0])
            chosen.append(it)
    if not chosen:
        return None
    vocab_list = vocab or sorted({audio_label_key(e) for it in chosen for e in it.sample.meta["events"]})
    index = {k: i for i, k in enumerate(vocab_list)}
    windows, targets = [], []
    spf = processor.config.audio_window_seconds / frames
    for it in chosen:
        feats, starts, _ = processor.audio_arrays(
            load_audio(it.media_paths[0], sample_rate=processor.config.audio_sample_rate)
        )
        windows.append(torch.from_numpy(feats))
        targets.append(torch.from_numpy(frame_targets(it.sample.meta["events"], starts, frames, spf, index)))
    return AudioSet(torch.cat(windows), torch.cat(targets), vocab_list)


def encoder_batch(data: ImageSet | AudioSet, idx: list[int], rng: random.Random | None = None):
    """(encoder input, targets) of items `idx`; with an rng (training) each image is mirrored with p = 0.5."""
    if isinstance(data, ImageSet):
        return data.batch(idx, [rng is not None and rng.random() < 0.5 for _ in idx])
    return data.windows[idx], data.targets[idx]


# --------------------------------------------------------------------------------------------------
# Training


def progress_path(cfg: EncoderConfig) -> Path:
    """Where a stopped stage 0 resumes from: its state, `output_dir/checkpoints/stage0.pt`."""
    return cfg.output_dir / "checkpoints" / "stage0.pt"


def save_progress(cfg: EncoderConfig, state: dict[str, Any]) -> None:
    """Stage 0's resumable state (`progress_path`), written whole or not at all."""
    with atomic_output(progress_path(cfg)) as tmp:
        torch.save(state, tmp)


def pretrain_encoders(cfg: EncoderConfig, resume: bool = False, console: Console | None = None,
                      stop_after: int | None = None) -> dict[str, Any]:
    """Stage 0 end to end: load data, pre-train each branch, save the checkpoint, metrics and curve.

    Every `save_every` steps and at each branch's end it saves its state (model, the branch's heads,
    optimizer, schedule, random states, batch order, history); `resume` goes on from there and gives what an
    uninterrupted run gives, or skips a run that already finished. `stop_after` (tests): stop once that many
    steps of all branches together are done, as if killed after its checkpoint.
    """
    from omniground.model.modeling_omniground import SmallAudioEncoder, SmallViT
    from omniground.train.report import StageProgress, plot_stages, write_metrics
    from omniground.train.trainer import build_start_model, finished_run

    console = console or Console(stderr=True)
    if (finished := finished_run(cfg, resume, console, "stage 0")) is not None:
        return finished
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    og = build_start_model(cfg.model)
    model, processor = og.model, og.processor
    items = load_sources(cfg.train_data)
    eval_items = load_sources(cfg.eval_data) if cfg.eval_data else []

    vit, audio = model.vision_tower.encoder, model.audio_encoder.encoder
    grid = model.config.patch_grid
    frames = model.config.audio_frames_per_window // 2  # the encoder's stride-2 conv
    branches: dict[str, dict[str, Any]] = {}
    with console.status("decoding the training media"):
        if "image" in cfg.modalities and isinstance(vit, SmallViT):
            train_set = load_image_set(items, processor, grid, cfg.relational_targets)
            if train_set is not None:
                branches["image"] = dict(
                    encoder=vit,
                    heads=ImageHeads(vit.norm.normalized_shape[0],
                                     model.region_pointer.box if model.region_pointer is not None else None,
                                     cfg.relational_targets),
                    train=train_set,
                    eval=load_image_set(eval_items, processor, grid, cfg.relational_targets),
                )
        if "audio" in cfg.modalities and isinstance(audio, SmallAudioEncoder):
            train_set = load_audio_set(items, processor, frames)
            if train_set is not None:
                branches["audio"] = dict(
                    encoder=audio,
                    heads=AudioHeads(audio.norm.normalized_shape[0], len(train_set.vocab)),
                    train=train_set,
                    eval=load_audio_set(eval_items, processor, frames, vocab=train_set.vocab),
                )
    if not branches:
        from omniground.train.config import TrainConfigError

        raise TrainConfigError(
            "stage 0 found nothing to pre-train: needs synth image samples with scene "
            "metadata or audio samples with events, and the from-scratch encoders"
        )
    for name, b in branches.items():
        console.print(f"stage 0 {name}: {len(b['train'])} training {'images' if name == 'image' else 'windows'}")

    history: list[dict] = []
    evals: list[dict] = []
    done: list[str] = []  # branches trained to the end
    saved = progress_path(cfg)
    drop_partial_outputs(saved.parent)
    progress = torch.load(saved, weights_only=False) if resume and saved.is_file() else None
    if progress is not None:
        model.load_state_dict(progress["model"])
        history, evals, done = progress["history"], progress["evals"], progress["done"]
        rng.setstate(progress["rng"])
        torch.set_rng_state(progress["torch_rng"])
        where = f"{progress['branch']} step {progress['step']}" if progress["branch"] else "the end of " + done[-1]
        console.print(f"stage 0 resumed from {saved} at {where}")
    t0 = time.time() - (progress["train_seconds"] if progress else 0.0)
    total = 0  # steps of all branches so far, for stop_after
    for name, b in branches.items():
        enc, heads = b["encoder"], b["heads"]
        steps = cfg.steps.get(name, cfg.max_steps)
        if name in done:
            total += steps
            continue
        enc.train()
        params = list(enc.parameters()) + list(heads.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = get_cosine_with_min_lr_schedule_with_warmup(
            opt, cfg.warmup_steps, steps, min_lr_rate=cfg.min_lr_ratio
        )  # as the trainer's
        data, n = b["train"], len(b["train"])
        order: list[int] = []
        first = 0
        if progress is not None and progress["branch"] == name:
            heads.load_state_dict(progress["heads"])
            opt.load_state_dict(progress["optimizer"])
            schedule.load_state_dict(progress["schedule"])
            order, first = progress["order"], progress["step"]

        def save(branch: str | None, step: int) -> None:
            extra = dict(heads=heads.state_dict(), optimizer=opt.state_dict(), schedule=schedule.state_dict()) \
                if branch else {}
            save_progress(cfg, dict(branch=branch, step=step, done=done, model=model.state_dict(), order=order,
                                    rng=rng.getstate(), torch_rng=torch.get_rng_state(), history=history,
                                    evals=evals, train_seconds=time.time() - t0, **extra))

        unit = "images" if name == "image" else "windows"
        with StageProgress(console, f"stage 0 {name}", steps, first, unit=unit, every=cfg.log_every) as bar:
            for step in range(first, steps):
                if len(order) < cfg.batch_size:
                    order += rng.sample(range(n), n)
                idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
                x, t = encoder_batch(data, idx, rng)
                loss, info = heads.loss(enc(x), t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                lr = schedule.get_last_lr()[0]
                opt.step()
                schedule.step()
                row = {
                    "branch": name,
                    "step": step + 1,
                    "loss": loss.item(),
                    "lr": lr,
                    **info,
                    "elapsed_s": time.time() - t0,
                }
                history.append(row)
                bar.step(step + 1, row["loss"], lr, cfg.batch_size, " ".join(f"{k} {v:.3f}" for k, v in info.items()))
                if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < steps:
                    save(name, step + 1)
                if stop_after is not None and total + step + 1 >= stop_after:
                    return {"stopped_at": {"branch": name, "step": step + 1}}
        total += steps
        if b["eval"] is not None:
            evals.append({"branch": name, "step": steps, **evaluate_branch(enc, heads, b["eval"])})
            console.print(
                f"stage 0 {name} held-out: "
                + ", ".join(f"{k} {v:.3f}" for k, v in evals[-1].items() if isinstance(v, float))
            )
        done.append(name)
        if cfg.save_every:
            save(None, 0)  # the branch's heads are done with

    out = cfg.output_dir
    if cfg.freeze_after:  # later stages keep them as they are, as the original keeps CLIP and Whisper
        model.config.train_encoders = False
    og.save_pretrained(cfg.model_dir)
    saved.unlink(missing_ok=True)  # the model is whole: nothing left to resume
    if saved.parent.is_dir() and not any(saved.parent.iterdir()):
        saved.parent.rmdir()
    summary = {
        "stage": 0,
        "branches": list(branches),
        "steps_per_branch": {name: cfg.steps.get(name, cfg.max_steps) for name in branches},
        "train_seconds": time.time() - t0,
        "history": history,
        "evals": evals,
    }
    write_metrics(out / "metrics.json", summary)
    plot_stages(
        out / "curve.png",
        [(f"{b}:", [r for r in history if r["branch"] == b], []) for b in branches],
        title="stage 0: encoder pre-training, one branch after the other",
    )
    console.print(f"stage 0 saved {cfg.model_dir} ({summary['train_seconds']:.0f} s)")
    return summary


@torch.no_grad()
def evaluate_branch(enc: nn.Module, heads: nn.Module, data: ImageSet | AudioSet, batch: int = 128) -> dict[str, float]:
    """Mean of the heads' figures over the held-out set (no flips)."""
    enc.eval()
    sums: dict[str, float] = {}
    chunks = 0
    for i in range(0, len(data), batch):
        x, t = encoder_batch(data, list(range(i, min(len(data), i + batch))))
        loss, info = heads.loss(enc(x), t)
        for k, v in {"loss": float(loss), **info}.items():
            sums[k] = sums.get(k, 0.0) + v
        chunks += 1
    enc.train()
    return {k: v / chunks for k, v in sums.items()}
