"""What all three generators share: per-sample random streams, held-out splits, stages, the sample record.

Determinism: sample `index` of (seed, split, modality) draws from its own stream
`SeedSequence([seed, SPLIT_CODE[split], MODALITY_CODE[modality], index])`, so a sample does not
depend on the worker that made it, on --workers, or on how many samples come before it.

Splits are held out twice:
* by seed: train/val/test draw from disjoint streams (the split code is part of every seed);
* by unseen combinations: the combinations below never occur in train/val/test and every sample
  of split "unseen" is built around one of them, so "unseen" measures compositional generalisation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test", "unseen")
SPLIT_CODE = {"train": 0, "val": 1, "test": 2, "unseen": 3}
MODALITIES = ("image", "video", "audio")
MODALITY_CODE = {"image": 0, "video": 1, "audio": 2}

SOURCE = "synth"
# Emoji: Noto Color Emoji (OFL-1.1); backgrounds: scikit-image sample data (CC0/public domain, per file);
# sounds: sound-theme-freedesktop (CC-BY-SA-3.0/GPL-2), alsa-utils (GPL-2); speech: espeak-ng output.
LICENSE = {
    "image": "OFL-1.1 (Noto Color Emoji) + scikit-image sample data licences",
    "video": "OFL-1.1 (Noto Color Emoji) + scikit-image sample data licences",
    "audio": "CC-BY-SA-3.0 (sound-theme-freedesktop) + GPL-2 (alsa-utils sounds) + espeak-ng output",
}


@dataclass(frozen=True)
class HeldOut:
    """Combinations seen only in split "unseen"."""

    relation_objects: frozenset[str] = frozenset({"frog", "guitar", "pear", "bus", "umbrella"})
    colour_pairs: frozenset[tuple[str, str]] = frozenset(
        {("cat", "blue"), ("apple", "purple"), ("car", "green"), ("duck", "red"), ("house", "yellow")}
    )
    moving_objects: frozenset[str] = frozenset({"elephant", "sunflower", "key", "snail"})
    speech_phrases: frozenset[str] = frozenset(
        {"close the window please", "the train leaves at noon", "where are my glasses", "rear center"}
    )


HELD_OUT = HeldOut()


def sample_rng(seed: int, split: str, modality: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_CODE[split], MODALITY_CODE[modality], index]))


def media_path(sample_id: str, modality: str, ext: str) -> str:
    """`media/{modality}/{index // 1000:04d}/{id}.{ext}`: a thousand files per folder, for runs of 100 000+."""
    index = int(sample_id.rsplit("-", 1)[1])
    return f"media/{modality}/{index // 1000:04d}/{sample_id}.{ext}"


def text_rng(rng: np.random.Generator) -> random.Random:
    """A stdlib RNG for picking phrasings, seeded from the sample's stream (instruct.render takes one)."""
    return random.Random(int(rng.integers(2**63)))


def choice(rng: np.random.Generator, seq):
    """One element of a sequence as its own Python type (np's choice would return numpy scalars)."""
    return seq[int(rng.integers(len(seq)))]


def weighted(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


# Share of samples per training stage (renormalised over the stages asked for). Split "unseen" is
# stage 2 only: it exists to score grounding on the held-out combinations.
STAGE_WEIGHTS = {1: 0.15, 2: 0.65, 3: 0.20}


def pick_stage(rng: np.random.Generator, stages: tuple[int, ...], split: str) -> int:
    if split == "unseen":
        return 2
    return int(weighted(rng, {str(s): STAGE_WEIGHTS[s] for s in stages}))


def record(sample_id: str, media, pairs, task: str, stage: int, cfg, *, boxes=(), spans=(), meta=None):
    """A schema Sample from (question, answer) pairs about one media (or a list of them, e.g. image + audio).

    Placeholders, one per media in order, go at the start of the first question.
    """
    from omniground.data import instruct
    from omniground.data.schema import Sample

    media = list(media) if isinstance(media, (list, tuple)) else [media]
    return Sample(
        id=sample_id,
        media=media,
        conversation=instruct.conversation(pairs, [m.type for m in media]),
        boxes=list(boxes),
        spans=list(spans),
        task=task,
        stage=stage,
        source=SOURCE,
        license=" + ".join(dict.fromkeys(LICENSE[m.type] for m in media)),
        split=cfg.split,
        meta=meta or {},
    )
