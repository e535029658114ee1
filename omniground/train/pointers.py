"""The pointer refit (`stage: pointers`, after stage 3): the region and span pointers' heads fitted again on
what the finished model feeds them, everything else frozen.

Why: in stages 1-2 the pointers learn beside the whole LM, at its learning rate, and see their data about
once -- they end under-fitted. omniground-tiny's region pointer chose a right patch for only 73% of its
own training REC boxes; refitted for 15 epochs on the same inputs, 84%, and held-out REC 0.69 -> 0.75,
audio 0.61 -> 0.72 (configs/omniground-tiny/README.md). Their inputs (the LM's hidden state at each `<|box|>` /
`<|span|>`, the image's patch features and regressed boxes, the clip's time slots) do not change while
only the heads train, so the frozen model computes them once, in one pass over the data, and each epoch
after that costs a fraction of a second. This is the classifier re-training of long-tailed recognition
(decoupled representation and classifier) applied to the pointers, heads started afresh as there. The
span head also reads clips no earlier stage saw (`extra3`): on the ones stages 1-3 trained on, the frozen
model's inputs are more telling than on new clips. With `region_presence` the region head also learns
"nothing here" from the negatives' absent phrases, read as REC answers (`absent_as_rec`); with
`region_heads` / `span_heads` each head is fitted on its own, from its own start and batches; with `own_words`
the listed tasks' answers are read in the model's own words before their box (`in_own_words`). With `save_every`
it keeps its work as it goes (`RefitProgress`) and `--resume` goes on from there; it runs in one process (on the
GPU where there is one).
"""

from __future__ import annotations

import ctypes
import json
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from omniground.data.schema import Sample
from omniground.files import atomic_output, drop_partial_outputs
from omniground.grounding import Box, parse
from omniground.grounding.geometry import box_iou, span_iou
from omniground.model.modeling_omniground import absent_targets
from omniground.train.config import PointerConfig, TrainConfigError
from omniground.train.data import Collator, SampleDataset, TrainItem, load_sources

HEADS = ("region", "span")


def progress_dir(cfg: PointerConfig) -> Path:
    """Where a stopped refit resumes from: its kept work, `output_dir/checkpoints/refit/`."""
    return cfg.output_dir / "checkpoints" / "refit"


def kept_record(folder: Path) -> Path:
    """The kept work's settings and seconds, written after each piece: there only where work was kept."""
    return folder / "kept.json"


class StoppedEarly(Exception):
    """Raised once `RefitProgress.stop_after` saves are done (tests): as if the refit were killed right then."""


class RefitProgress:
    """A refit's work kept as it is done (`save_every`), for `--resume`: the answers read in the model's own
    words, the frozen model's read in parts of `save_every` batches, and the heads' state as each head's fit ends.
    A resumed refit gives what an uninterrupted one gives. Why parts: the read is most of the refit (14 of its
    21 min in the default recipe), and its GBs are written as they are read rather than all at the end."""

    def __init__(self, cfg: PointerConfig, resume: bool, console: Console, stop_after: int | None = None):
        self.dir, self.every, self.stop_after, self.saves = progress_dir(cfg), cfg.save_every, stop_after, 0
        if not resume and self.dir.is_dir():  # an earlier run's work is not this one's
            if kept_record(self.dir).is_file():
                console.print(f"pointers: starting over; dropped the work a stopped refit kept in {self.dir} "
                              "(--resume goes on from it)", highlight=False, soft_wrap=True)
            shutil.rmtree(self.dir, ignore_errors=True)
        drop_partial_outputs(self.dir)
        # what the kept work depends on (all of the config but how often it is kept and logged), and the seconds
        # it took: figures and metrics count the refit's whole time
        self.settings = cfg.model_dump(mode="json", exclude={"save_every", "log_every"})
        kept = json.loads(kept_record(self.dir).read_text()) if kept_record(self.dir).is_file() else None
        if kept is not None and kept["settings"] != self.settings:
            changed = ", ".join(k for k in self.settings if self.settings[k] != kept["settings"].get(k))
            raise self.refusal(f"with other settings ({changed})")
        self.started, self.resumed = time.time() - (kept["elapsed"] if kept else 0.0), kept is not None

    def refusal(self, kept_by: str) -> TrainConfigError:
        """Why this run cannot go on from the kept work (made by another refit), in one line."""
        return TrainConfigError(f"{self.dir}: kept by a refit {kept_by}; run it without --resume to start over")

    def elapsed(self) -> float:
        return time.time() - self.started

    def load(self, name: str) -> Any | None:
        path = self.dir / f"{name}.pt"
        return torch.load(path, weights_only=True) if path.is_file() else None

    def save(self, name: str, value: dict[str, Any]) -> None:
        """Keep `value` as `name`, written whole or not at all (nothing without `save_every`)."""
        if not self.every:
            return
        with atomic_output(self.dir / f"{name}.pt") as tmp:
            torch.save(value, tmp)
        # what it was made with and the seconds so far, apart: read at every start, unlike the GBs of parts
        with atomic_output(kept_record(self.dir)) as tmp:
            tmp.write_text(json.dumps({"settings": self.settings, "elapsed": self.elapsed()}))
        self.saves += 1
        if self.stop_after is not None and self.saves >= self.stop_after:
            raise StoppedEarly(name)

    def parts(self, name: str) -> list[tuple[int, int]]:
        """Where `name`'s read kept a part (`{name}-{batches done}-of-{batches}.pt`), in order."""
        found = (re.fullmatch(rf"{re.escape(name)}-(\d+)-of-(\d+)\.pt", p.name) for p in self.dir.glob(f"{name}-*"))
        return sorted((int(m[1]), int(m[2])) for m in found if m)

    def clear(self) -> None:
        """The model is saved: nothing left to resume."""
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.dir.parent.is_dir() and not any(self.dir.parent.iterdir()):
            self.dir.parent.rmdir()


def slug(what: str) -> str:
    """A pass's name as a file name: "training data, absent phrases" -> "training-data-absent-phrases"."""
    return re.sub(r"\W+", "-", what).strip("-")


@contextmanager
def recording_pointer_inputs(model):
    """Inside: every pointer loss the model computes also records its (detached) arguments, per head --
    region: (hidden, patches, boxes, target[, text, text mask] with `region_reread`); span: (hidden, slots,
    mask, target, whether the clip is audio[, text, text mask] with `span_reread`)."""
    heads = {"region": model.region_pointer, "span": model.span_pointer}
    seen: dict[str, list[tuple[torch.Tensor, ...]]] = {name: [] for name in HEADS}

    def recorder(head, into):
        def loss(*args):
            into.append(tuple(a.detach() for a in args))
            return type(head).loss(head, *args)
        return loss

    for name, head in heads.items():
        if head is not None:
            head.loss = recorder(head, seen[name])  # an instance attribute over the class's method
    try:
        yield seen
    finally:
        for head in heads.values():
            if head is not None and "loss" in vars(head):
                del head.loss


@torch.no_grad()
def capture(og, items, batch_size: int, console: Console, what: str, progress: RefitProgress | None = None
            ) -> dict[str, list[list[torch.Tensor]]]:
    """One forward pass of the frozen model over `items` (with labels, as in training) -> per head the
    inputs of its loss for every target box / span: per input, its batches' parts (`read_pointer_inputs` joins
    them). With `progress` that keeps work, the calls recorded are kept every `save_every` batches (and at the end)
    and let go, and the read goes on after the last part kept."""
    from omniground.train.report import StageProgress

    model = og.model.eval()
    data, collate = SampleDataset(items, og.processor, cache_media=False), Collator(og.processor)
    lengths = data.lengths()  # batches of one kind of media and like lengths: mixed ones pad and encode more
    order = sorted(range(len(items)), key=lambda i: (tuple(m.type for m in items[i].sample.media), int(lengths[i])))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    keeping = progress is not None and progress.every > 0
    name = f"read-{slug(what)}"
    kept = progress.parts(name) if keeping else []
    if any(of != len(batches) for _, of in kept):
        raise progress.refusal(f"of other data ({what}: not {len(batches)} batches)")
    first = kept[-1][0] if kept else 0
    if first:
        console.print(f"pointers: reading {what}: {first} of {len(batches)} batches kept, read before")
    done = sum(len(b) for b in batches[:first])
    with recording_pointer_inputs(model) as seen, \
            StageProgress(console, f"pointers: reading {what}", len(data), done) as bar:

        def read(idx: list[int]):
            return collate([data[j] for j in idx])

        # the next batch is read (media decoded, text tokenised) while the model runs on this one: the refit's
        # read of 72,472 samples 7% faster (decoding lets go of the GIL, as the model's kernels do)
        with ThreadPoolExecutor(1) as reader:
            upcoming = reader.submit(read, batches[first]) if first < len(batches) else None
            for k in range(first, len(batches)):
                batch = upcoming.result()
                if k + 1 < len(batches):
                    upcoming = reader.submit(read, batches[k + 1])
                model(**batch.to(model.device))
                bar.advance(len(batches[k]))
                if keeping and ((k + 1) % progress.every == 0 or k + 1 == len(batches)):
                    progress.save(f"{name}-{k + 1}-of-{len(batches)}", {"calls": {h: list(c) for h, c in seen.items()}})
                    for calls in seen.values():
                        calls.clear()
        if keeping:  # every part, in order, as if recorded in this one pass
            for end, of in progress.parts(name):
                for head, calls in progress.load(f"{name}-{end}-of-{of}")["calls"].items():
                    seen[head] += calls
    return {head: [list(field) for field in zip(*calls)] for head, calls in seen.items() if calls}


def cat_padded(parts: list[torch.Tensor]) -> torch.Tensor:
    """Tensors alike but for their first dimension and, where they differ (the mask of the text a reread reads:
    each batch's as long as its longest), later ones -> one, padded at the end with zeros / False.

    The list is emptied as it is copied, each part dropped once copied (and its memory given back to the
    system, `give_back_freed_memory`), into a tensor left empty (its memory is taken as it is written, not all
    at once as zeros would): the refit's recorded inputs (GBs for 60,000 scenes) are then held about once, not
    twice (a copy of all beside all the parts ran 24 GB out). 2.4 GB of parts made between other tensors, as a
    forward pass makes them, joined at a peak RSS of 6.2 GB before, 3.6 GB so."""
    shape = [max(sizes) for sizes in zip(*(p.shape[1:] for p in parts))]
    out = parts[0].new_empty(sum(len(p) for p in parts), *shape)
    at = 0
    for part in drained(parts):
        rows = out[at : at + len(part)]
        rows[tuple(slice(0, n) for n in part.shape)] = part
        for dim, n in enumerate(part.shape[1:], 1):  # the padding after it, in each later dimension
            rows.narrow(dim, n, rows.shape[dim] - n).zero_()
        at += len(part)
        del part, rows
    return out


def drained(parts: list[torch.Tensor]):
    """The list's tensors one by one, each taken out of the list as it is handed over, and the memory of those
    let go given back to the system every 256 MB (`give_back_freed_memory`): how the refit's joins hold their
    parts about once."""
    freed = 0
    while parts:
        part = parts.pop(0)
        freed += part.nbytes
        yield part
        del part
        if freed > 256 << 20:
            give_back_freed_memory()
            freed = 0


class RaggedText:
    """The text each recorded box / span re-reads (its tokens' hidden states: about 50 where the longest has 100),
    kept end to end and padded only as a batch is drawn: `text[idx]` is what the text padded to the longest would
    give (zeros where `mask` is not set; the reread weighs those at exactly zero whatever they hold). Why: padded
    to the longest, 64,000 boxes' text took 6.3 GB, twice what it holds."""

    def __init__(self, values: torch.Tensor, mask: torch.Tensor):
        self.values, self.mask = values, mask  # values (T, H): the set positions, row after row, in order
        self.counts = mask.sum(1)
        self.starts = self.counts.cumsum(0) - self.counts  # where each row's values begin

    @classmethod
    def join(cls, texts: list[torch.Tensor], masks: list[torch.Tensor]) -> "RaggedText":
        """Per batch its text (B, L_b, H) and mask (B, L_b) -> one; `texts` is emptied as it is read
        (`drained`) and `masks` joined by `cat_padded`."""
        values = texts[0].new_empty(sum(int(m.sum()) for m in masks), texts[0].shape[-1])
        at = 0
        for text, mask in zip(drained(texts), masks):
            n = int(mask.sum())
            values[at : at + n] = text[mask]
            at += n
            del text
        return cls(values, cat_padded(masks))

    def __len__(self) -> int:
        return len(self.mask)

    def __getitem__(self, idx) -> torch.Tensor:
        mask = self.mask[idx]
        rows = torch.arange(len(self.mask), device=self.mask.device)[idx].reshape(-1)
        counts = self.counts[rows]
        # the k-th value handed out is the values' (k + where its row begins there - where it begins here)
        shift = (self.starts[rows] - (counts.cumsum(0) - counts)).repeat_interleave(counts)
        out = self.values.new_zeros(*mask.shape, self.values.shape[-1])
        out[mask] = self.values[torch.arange(len(shift), device=shift.device) + shift]
        return out


def give_back_freed_memory() -> None:
    """Return the C heap's freed pages to the system (glibc's malloc_trim; elsewhere nothing). Why: the parts
    `drained` drops are a few MB each, and once any such block has been freed glibc serves them from its
    heap, whose freed pages it keeps: without this the joined tensor grew beside all of them."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def absent_as_rec(negatives: list[TrainItem], rec: list[TrainItem]) -> list[TrainItem]:
    """Negative samples (an image and a phrase it lacks, `meta.absent`) -> REC samples that point at that
    phrase, worded as the REC samples are (the j-th borrows the (j mod n)-th REC sample's question and
    answer with the phrase swapped in; the box written is a placeholder). Why borrowed: with a wording of
    their own the presence head could tell absent phrases by how they are asked, not by the image."""
    if not rec:
        raise TrainConfigError("the pointer refit reads negatives (phrases an image lacks) as REC answers: "
                               "it needs REC samples in its training data too")
    out = []
    for j, item in enumerate(negatives):
        absent, like = item.sample.meta.get("absent"), rec[j % len(rec)].sample
        if not absent:
            raise TrainConfigError(f"negative sample {item.sample.id} has no meta.absent: which phrase is absent?")
        phrase = like.boxes[0].phrase
        turns = [{"role": t.role, "content": t.content.replace(phrase, absent)} for t in like.conversation]
        for t in turns:
            if t["role"] == "assistant":
                t["content"] = re.sub(r"\[[\d.,\s]+\]", "[0.000,0.000,1.000,1.000]", t["content"])
        sample = Sample.model_validate({**like.model_dump(), "id": item.sample.id, "conversation": turns,
                                        "media": [m.model_dump() for m in item.sample.media], "meta": {},
                                        "boxes": [{"phrase": absent, "box": [0.0, 0.0, 1.0, 1.0]}]})
        out.append(TrainItem(sample, item.root))
    return out


@torch.no_grad()
def in_own_words(og, items: list[TrainItem], tasks: Sequence[str], batch_size: int, console: Console, what: str,
                 progress: RefitProgress | None = None) -> list[TrainItem]:
    """The samples of `tasks` (one question, one answer with one box) with the answer's words before the box
    written by the model itself, greedy as it answers, and the true box after them; the rest as they are (and
    those whose own answer writes no box). Why: the region head re-reads the text before the box, and fitted
    on the true words it follows the words. On sound localisation the model names the sounding object itself,
    wrongly in about two answers of three on omniground-tiny: its head, refitted on the true names, got
    held-out boxes right less often than before the refit (0.43 against 0.67; configs/omniground-tiny/README.md).
    """
    from omniground.train.report import StageProgress

    chosen = [j for j, item in enumerate(items) if item.sample.task in tasks and _one_box_answer(item.sample)]
    if not chosen:
        return items
    name = f"own-words-{slug(what)}"
    kept = progress.load(name) if progress is not None else None
    if kept is not None and kept["asked"] != len(chosen):
        raise progress.refusal(f"of other data ({what}: not {len(chosen)} answers)")
    own: dict[int, str] = dict(kept["own"]) if kept is not None else {}  # item -> its answer's words before the box
    if kept is None:
        og.model.eval()
        with StageProgress(console, f"pointers: answering {what} in the model's own words", len(chosen),
                           unit="answers") as bar:
            for k in range(0, len(chosen), batch_size):
                rows = chosen[k : k + batch_size]
                samples = [items[j].sample for j in rows]
                answers = og.chat_batch([[{"role": "user", "content": s.conversation[0].content}] for s in samples],
                                        [[s.media_path(i, items[j].root) for i in range(len(s.media))]
                                         for s, j in zip(samples, rows)],
                                        # only the words before the box are kept: no second view of the image
                                        # (`region_mirror`) for the box, which doubled this step's time
                                        max_new_tokens=32, check_declines=False, region_mirror=False)
                for j, answer in zip(rows, answers):
                    if (at := _first_box_at(answer.text)) is not None:
                        own[j] = answer.text[:at]
                bar.advance(len(rows))
        if progress is not None:
            progress.save(name, {"asked": len(chosen), "own": sorted(own.items())})
    out = list(items)
    for j, words in own.items():
        s = items[j].sample
        true = s.conversation[1].content
        turns = [s.conversation[0].model_dump(), {"role": "assistant", "content": words + true[_first_box_at(true) :]}]
        out[j] = TrainItem(Sample.model_validate({**s.model_dump(), "conversation": turns}), items[j].root)
    return out


def _boxes_at(text: str) -> list[int]:
    """Where each box's notation starts in a text, as the grounding language reads it."""
    return [at.start for at in parse(text).located if isinstance(at.item, Box)]


def _first_box_at(text: str) -> int | None:
    return next(iter(_boxes_at(text)), None)


def _one_box_answer(sample: Sample) -> bool:
    turns = sample.conversation
    return (len(turns) == 2 and turns[0].role == "user" and turns[1].role == "assistant" and len(sample.boxes) == 1
            and len(_boxes_at(turns[1].content)) == 1)


@torch.no_grad()
def reinitialise(head) -> None:
    """The head's query and key (and the span pointer's slot edges and key MLP, the region pointer's presence,
    either's text reread) back to a fresh start; the region pointer's box regressor stays. Why: the refit's result then
    depends on the frozen model alone, not on where stages 1-3 left the head (as in classifier re-training);
    fitted afresh or onward, held out alike."""
    extra = [getattr(head, name, None) for name in ("edges", "key_mlp", "absent", "reread")]
    parts = [head.key, head.query] + [m for m in extra if m is not None]
    for m in (m for part in parts for m in part.modules()):
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def region_choices(model, examples: tuple[torch.Tensor, ...], rows: list[int], chunk: int = 512
                   ) -> tuple[list[list[int]], list[float]]:
    """The region pointer's bins and confidence for the given rows of its recorded examples, `chunk` at a time."""
    hidden, patches, boxes, _, *text = examples
    bins, confidences = [], []
    for i in range(0, len(rows), chunk):
        at = torch.tensor(rows[i : i + chunk], dtype=torch.long)
        b, c = model.region_pointer.choose_many(hidden[at], patches[at], boxes[at], model.config.num_location_bins,
                                                *(t[at] for t in text))
        bins += b
        confidences += c
    return bins, confidences


@torch.no_grad()
def hit_rate(model, name: str, examples: tuple[torch.Tensor, ...]) -> float:
    """The share of boxes (IoU >= 0.5, as Acc@0.5) or spans (as R@1 at IoU 0.5) the head's own choice gets
    right, given what the model feeds it -- the figure the refit moves. Absent phrases: see `declined`."""
    head, bins = getattr(model, f"{name}_pointer"), model.config.num_location_bins
    hidden, media, extra, target, *text = examples
    present = (~absent_targets(target)).nonzero().flatten().tolist()
    if name == "region":
        chosen = region_choices(model, examples, present)[0]
    else:  # clips of different lengths: one at a time
        chosen = [head.choose(hidden[i], media[i], extra[i], bins, *(t[i] for t in text))[0] for i in present]
    iou = box_iou if name == "region" else span_iou
    hits = sum(iou([b / (bins - 1) for b in c], target[i].tolist()) >= 0.5 for c, i in zip(chosen, present))
    return hits / max(len(present), 1)


@torch.no_grad()
def declined(model, examples: tuple[torch.Tensor, ...]) -> float | None:
    """Of the phrases the image lacks (target all -1), the share whose box scores below 0.5 (what
    `omniground ground --min-score 0.5` drops); None without any."""
    absent = absent_targets(examples[3]).nonzero().flatten().tolist()
    if not absent:
        return None
    return sum(c < 0.5 for c in region_choices(model, examples, absent)[1]) / len(absent)


@torch.no_grad()
def read_pointer_inputs(og, items: list[TrainItem], batch_size: int, console: Console, what: str,
                        own_words: Sequence[str] = (), progress: RefitProgress | None = None
                        ) -> dict[str, tuple[torch.Tensor, ...]]:
    """`capture`, with negative samples read as REC answers (`absent_as_rec`) whose right answer is
    "nothing here" (target all -1): what the region pointer's presence learns from; the answers of the tasks
    `own_words` lists in the model's own words (`in_own_words`). Per head its loss's inputs, each joined over
    the batches (`cat_padded`; a reread's text as `RaggedText`); `progress` keeps the work (`RefitProgress`)."""
    # absent phrases borrow the REC samples' true wording: the model's own words name what the image holds
    templates = [i for i in items if i.sample.task == "rec" and i.sample.boxes]
    if own_words:
        items = in_own_words(og, items, own_words, batch_size, console, what, progress)
        give_back_freed_memory()  # generation's freed heap (0.4 GB for 637 answers): the read's peak comes next
    negatives = [i for i in items if i.sample.task == "negative"]
    rest = [i for i in items if i.sample.task != "negative"]
    seen = capture(og, rest, batch_size, console, what, progress) if rest else {}
    if negatives:
        head = og.model.region_pointer
        if head is None or head.absent is None:
            raise TrainConfigError("negatives in the pointer refit's data teach the region pointer 'nothing here': "
                                   "the model needs region_presence (model.config_updates: {region_presence: true})")
        absent = capture(og, absent_as_rec(negatives, templates), batch_size, console,
                         f"{what}, absent phrases", progress)["region"]
        absent[3] = [torch.full_like(target, -1.0) for target in absent[3]]
        for field, more in zip(seen.setdefault("region", [[] for _ in absent]), absent):
            field += more
        del absent
    joined = {}
    for name, fields in seen.items():
        if getattr(og.model, f"{name}_pointer").reread is not None:  # its last two: the text and its mask
            *fields, texts, masks = fields
            text = RaggedText.join(texts, masks)
            joined[name] = (*(cat_padded(parts) for parts in fields), text, text.mask)
        else:
            joined[name] = tuple(cat_padded(parts) for parts in fields)
    return joined


@torch.no_grad()
def mean_loss(head, examples: tuple[torch.Tensor, ...], batch: int = 256) -> float:
    """The head's loss over all the examples (what the fit lowers, whether or not the boxes it reads are right)."""
    n = len(examples[0])
    return sum(float(head.loss(*(x[i : i + batch] for x in examples))) * len(examples[0][i : i + batch])
               for i in range(0, n, batch)) / max(n, 1)


def fit_head(head, examples, steps: int, cfg: PointerConfig, generator: torch.Generator, console: Console,
             name: str) -> list[dict]:
    """AdamW on the head's own loss over random batches of the recorded examples, the trainer's schedule."""
    from omniground.train.report import StageProgress

    head.train()
    params = [p for p in head.parameters() if p.requires_grad]  # the region pointer's box regressor stays frozen
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = get_cosine_with_min_lr_schedule_with_warmup(opt, cfg.warmup_steps, steps, min_lr_rate=cfg.min_lr_ratio)
    n, order, history = len(examples[0]), torch.empty(0, dtype=torch.long), []
    with StageProgress(console, f"pointers: fitting {name}", steps, unit="examples", every=cfg.log_every) as bar:
        for step in range(steps):
            if len(order) < min(cfg.batch_size, n):
                order = torch.cat([order, torch.randperm(n, generator=generator)])
            idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
            loss = head.loss(*(x[idx] for x in examples))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            lr = schedule.get_last_lr()[0]
            opt.step()
            schedule.step()
            history.append({"branch": name, "step": step + 1, "loss": loss.item(), "lr": lr})
            bar.step(step + 1, history[-1]["loss"], lr, len(idx))
    head.eval()
    return history


def refit_pointers(cfg: PointerConfig, resume: bool = False, console: Console | None = None,
                   stop_after: int | None = None) -> dict[str, Any]:
    """The refit end to end: read the data through the frozen model, fit each pointer head, save the
    checkpoint, metrics (each head's hit rate before and after, on the training and held-out data) and curve.

    With `save_every` it keeps its work as it goes (`RefitProgress`); `resume` goes on from there and gives what
    an uninterrupted run gives, or skips a run that already finished. `stop_after` (tests): stop once that many
    pieces of work are kept, as if killed right after."""
    from omniground.train.report import plot_stages, write_metrics
    from omniground.train.trainer import build_start_model, finished_run

    console = console or Console(stderr=True)
    if (finished := finished_run(cfg, resume, console, "pointer refit")) is not None:
        return finished
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    og = build_start_model(cfg.model)
    og.model.requires_grad_(False).to("cuda" if torch.cuda.is_available() else "cpu")
    progress = RefitProgress(cfg, resume, console, stop_after)
    try:
        summary = _refit(cfg, og, progress, console)
    except StoppedEarly as stop:
        return {"stopped_at": str(stop)}
    og.save_pretrained(cfg.model_dir)
    progress.clear()
    write_metrics(cfg.output_dir / "metrics.json", summary)
    history = summary["history"]
    branches = dict.fromkeys(r["branch"] for r in history)  # each head's fit, `region_heads`' and `span_heads`' each
    plot_stages(cfg.output_dir / "curve.png",
                [(f"{b}:", [r for r in history if r["branch"] == b], []) for b in branches],
                title="pointer refit: each head on the frozen model's inputs")
    console.print(f"pointer refit saved {cfg.model_dir} ({summary['train_seconds']:.0f} s)")
    return summary


def _refit(cfg: PointerConfig, og, progress: RefitProgress, console: Console) -> dict[str, Any]:
    """`refit_pointers`' work: the reads, then each head's fit; the metrics."""
    model = og.model
    items = load_sources(cfg.train_data)
    train = read_pointer_inputs(og, items, cfg.capture_batch_size, console, "training data", cfg.own_words,
                                progress)
    held = read_pointer_inputs(og, load_sources(cfg.eval_data), cfg.capture_batch_size, console, "held-out data",
                               cfg.own_words, progress) if cfg.eval_data else {}
    capture_seconds = progress.elapsed()
    if not train:
        raise TrainConfigError("the pointer refit found nothing to fit: needs a model with region_boxes or "
                               "span_pointers and data with boxes on images or spans on clips")
    history: list[dict] = []
    figures: dict[str, dict[str, Any]] = {}
    for name, examples in train.items():
        head = getattr(model, f"{name}_pointer")
        sets = {"train": examples, **({"held_out": held[name]} if name in held else {})}
        # `region_heads` / `span_heads`: each of the heads that answer together is fitted on its own, from its
        # own start and draw of batches (seed + i), so that they err apart
        members = head.members()
        steps = cfg.steps.get(name, cfg.max_steps)
        kept = progress.load(f"fit-{name}")  # the head as its last finished member's fit left it
        if kept is not None:
            head.load_state_dict(kept["state"])
            fitted, fit_seconds, was = kept["fitted"], kept["seconds"], kept["was"]
            history += kept["history"]
            console.print(f"pointers: fitting {name}: {fitted} of {len(members)} heads kept, fitted before")
        else:
            fitted, fit_seconds = 0, 0.0
            was = {"loss": mean_loss(head, examples), "hits": {k: hit_rate(model, name, v) for k, v in sets.items()},
                   # only sets that hold absent phrases: one without any has no share to report
                   "declined": {k: d for k, v in sets.items() if (d := declined(model, v)) is not None}
                   if name == "region" and head.absent is not None else {}}
        loss_before, before, declined_before = was["loss"], was["hits"], was["declined"]
        for i, member in enumerate(members):
            if i < fitted:
                continue
            t = time.time()
            torch.manual_seed(cfg.seed + i)  # the fresh start: not what loading drew for weights a checkpoint lacked
            reinitialise(member)
            member.requires_grad_(True)
            # the other heads, fitted in their own turn, and stage 0's box regressor (frozen with the encoders; the
            # first region head's) stay as they are
            for frozen in (*member.more, getattr(member, "box", None)):
                if frozen is not None:
                    frozen.requires_grad_(False)
            # each head its own draw of batches: the span head's fit does not move when the region head's data does
            history += fit_head(member, examples, steps, cfg, torch.Generator().manual_seed(cfg.seed + i), console,
                                name if i == 0 else f"{name}{i}")
            member.requires_grad_(False)
            fit_seconds += time.time() - t
            progress.save(f"fit-{name}", {"state": head.state_dict(), "fitted": i + 1, "seconds": fit_seconds,
                                          "was": was, "history": [r for r in history if r["branch"].startswith(name)]})
        after = {k: hit_rate(model, name, v) for k, v in sets.items()}
        figures[name] = {"examples": len(examples[0]), "steps": steps, "heads": len(members),
                         "fit_seconds": fit_seconds,
                         "loss": {"before": loss_before, "after": mean_loss(head, examples)},  # the first head's
                         "before": before, "after": after}
        console.print(f"pointers {name} ({len(examples[0])} examples): "
                      + ", ".join(f"{k} {before[k]:.3f} -> {after[k]:.3f}" for k in sets))
        if name == "region" and declined_before:
            declined_after = {k: declined(model, sets[k]) for k in declined_before}
            figures[name]["absent_declined"] = {"before": declined_before, "after": declined_after}
            console.print("pointers region, absent phrases scored below 0.5: "
                          + ", ".join(f"{k} {declined_before[k]:.3f} -> {declined_after[k]:.3f}" for k in declined_before))
    # resumed: the seconds count the work kept by earlier runs, and capture_seconds any of their fits too
    return {"stage": "pointers", "samples": len(items), "capture_seconds": capture_seconds, "heads": figures,
            "train_seconds": progress.elapsed(), "resumed": progress.resumed, "history": history}
