"""Samples -> batches: the dataset over JSONL sources, length-grouped batch plans, and the collate.

Batches are planned, not drawn: `plan_epoch(epoch)` is a pure function of (seed, epoch), and step k
of a run always gets the same global batch. That is what makes a resumed run equal an uninterrupted
one, and what lets every DDP process take its own slice of the same global batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature

from omniground.data.schema import BadLine, Sample, read_jsonl
from omniground.grounding import parse
from omniground.model.processing_omniground import IGNORE_INDEX, PLACEHOLDERS
from omniground.train.config import DataSource, TrainConfigError

MEGABATCH_MULTIPLIER = 16  # length grouping sorts within windows of this many global batches


@dataclass
class TrainItem:
    """A sample with its media resolved against its JSONL's folder, or (from a `text_only` source) its words alone."""

    sample: Sample
    root: Path
    words: list[dict] | None = None  # `words_alone(sample)`, for a text_only source: what is trained on, no media

    @property
    def media_paths(self) -> list[str]:
        return [str(self.sample.media_path(i, self.root)) for i in range(len(self.sample.media))]


def words_alone(sample: Sample) -> list[dict]:
    """The sample's conversation without its media, cut before the first box or span an answer gives.

    A box or span can only be learned with its media, the words before it can: "The cat to the left of the
    cup is at" copies the question's phrase whatever the image. The cut answer is marked `open_end` (its end
    is not where the answer ends, so the collate leaves its closing token unlearned). Returns [] when no
    answer keeps a word; raises ValueError when a question holds a location (it means nothing without media).
    """
    out: list[dict] = []
    for turn in sample.conversation:
        text = turn.content
        if turn.role != "assistant":
            for tag in PLACEHOLDERS.values():
                text = text.replace(tag + "\n", "").replace(tag, "")
            if parse(text).located:
                raise ValueError(f"sample {sample.id}: a question holds a box or span, which needs its media")
            out.append({"role": turn.role, "content": text.strip()})
            continue
        located = parse(text).located
        if not located:
            out.append({"role": "assistant", "content": text})
            continue
        words = text[: located[0].start].rstrip()
        if words:
            out.append({"role": "assistant", "content": words, "open_end": True})
        break
    while out and out[-1]["role"] != "assistant":
        out.pop()
    return out


def load_sources(sources: Sequence[DataSource]) -> list[TrainItem]:
    """Every kept sample of every source, in file order (limit, then repeat, per source)."""
    items: list[TrainItem] = []
    for src in sources:
        if not src.path.is_file():
            raise TrainConfigError(f"data file not found: {src.path}")
        bad: list[BadLine] = []
        kept = []
        for s in read_jsonl(src.path, bad):
            if src.tasks is not None and s.task not in src.tasks:
                continue
            if src.stages is not None and s.stage not in src.stages:
                continue
            if src.splits is not None and s.split not in src.splits:
                continue
            words = None
            if src.text_only:
                try:
                    words = words_alone(s)
                except ValueError as e:
                    raise TrainConfigError(f"{src.path}: text_only: {e}") from None
                if not words:
                    continue  # every answer starts with its location: no words to learn
            kept.append(TrainItem(s, src.path.parent, words))
            if src.limit is not None and len(kept) >= src.limit:
                break
        if bad:
            raise TrainConfigError(f"{src.path}: line {bad[0].line}: {bad[0].error} ({len(bad)} bad lines)")
        if not kept:
            raise TrainConfigError(f"{src.path}: no samples left after the task/stage/split filters")
        items.extend(kept * src.repeat)
    return items


class SampleDataset(torch.utils.data.Dataset):
    """(messages, decoded media) per sample; decoded media are kept in memory when `cache_media`."""

    def __init__(self, items: list[TrainItem], processor, cache_media: bool = True):
        self.items = items
        self.processor = processor
        self.cache: dict[str, list[Any]] | None = {} if cache_media else None

    def __len__(self) -> int:
        return len(self.items)

    def media(self, item: TrainItem) -> list[Any]:
        if item.words is not None:
            return []
        key = item.sample.id + "|" + "|".join(item.media_paths)
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        decoded = [self.processor.load_media(m.type, p) for m, p in zip(item.sample.media, item.media_paths)]
        if self.cache is not None:
            self.cache[key] = decoded
        return decoded

    def __getitem__(self, i: int) -> tuple[list[dict], list[Any]]:
        item = self.items[i]
        if item.words is not None:
            return item.words, []
        messages = [{"role": t.role, "content": t.content} for t in item.sample.conversation]
        return messages, self.media(item)

    def lengths(self) -> np.ndarray:
        """Tokens per sample (text + media placeholders): what length grouping sorts by."""
        tok = self.processor.tokenizer
        counts = self.processor.config.media_token_counts()
        texts = ["\n".join(m["content"] for m in it.words) if it.words is not None else
                 "\n".join(t.content for t in it.sample.conversation) for it in self.items]
        text_tokens = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        media_tokens = [0 if it.words is not None else sum(counts[m.type] for m in it.sample.media)
                        for it in self.items]
        return np.asarray(text_tokens, dtype=np.int64) + np.asarray(media_tokens, dtype=np.int64)


class BatchPlan:
    """Global batches (lists of dataset indices) for each epoch, as a pure function of (seed, epoch).

    With `lengths`, indices are shuffled, cut into mega-batches of MEGABATCH_MULTIPLIER global
    batches, sorted by length inside each, chunked, and the chunks shuffled: padding stays small
    while batch order stays random (cf. HF's LengthGroupedSampler). The last partial batch is dropped.
    """

    def __init__(self, num_samples: int, global_batch: int, seed: int, lengths: np.ndarray | None = None):
        if num_samples < global_batch:
            raise TrainConfigError(
                f"{num_samples} training samples is fewer than one global batch ({global_batch}): lower batch_size"
            )
        self.num_samples, self.global_batch, self.seed, self.lengths = num_samples, global_batch, seed, lengths

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def plan_epoch(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.num_samples)
        if self.lengths is not None:
            mega = self.global_batch * MEGABATCH_MULTIPLIER
            groups = [order[i : i + mega] for i in range(0, len(order), mega)]
            order = np.concatenate([g[np.argsort(-self.lengths[g], kind="stable")] for g in groups])
        batches = [order[i * self.global_batch : (i + 1) * self.global_batch].tolist()
                   for i in range(self.batches_per_epoch)]
        if self.lengths is not None:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        return batches

    def global_batch_at(self, index: int) -> list[int]:
        """The index-th global batch of the run, counting across epochs."""
        epoch, within = divmod(index, self.batches_per_epoch)
        return self.plan_epoch(epoch)[within]


def shard(global_batch: list[int], rank: int, world: int) -> list[int]:
    """This process's contiguous slice of a global batch (neighbours in length stay together)."""
    per = len(global_batch) // world
    return global_batch[rank * per : (rank + 1) * per]


class Collator:
    """[(messages, media)] -> model inputs with `labels` on assistant turns only (the processor's masking).

    A conversation whose last answer is cut (`open_end`, from `words_alone`) keeps its closing token unlearned.
    """

    def __init__(self, processor, max_length: int | None = None):
        self.processor = processor
        self.max_length = max_length

    def __call__(self, examples: list[tuple[list[dict], list[Any]]]) -> BatchFeature:
        conversations = [m for m, _ in examples]
        media = [x for _, x in examples]
        batch, _ = self.processor.prepare(
            conversations, media, add_generation_prompt=False, return_labels=True, padding_side="right",
            max_length=self.max_length,
        )
        for row, messages in enumerate(conversations):
            cut_short = self.max_length is not None and int(batch["attention_mask"][row].sum()) >= self.max_length
            if messages and messages[-1].get("open_end") and not cut_short:  # cut short: its closing token is gone
                learned = (batch["labels"][row] != IGNORE_INDEX).nonzero()
                batch["labels"][row, learned[-1]] = IGNORE_INDEX
        return batch
