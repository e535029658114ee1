"""The Python API: `omniground.load(path).ground(media, "the dog")`, `.chat(messages)`, `.chat_batch(...)`.

Generation uses Hugging Face `generate` (KV cache, greedy or sampling, stop strings, streamers);
media are encoded once per request, in the prefill step. `chat_batch` answers several requests in
one left-padded batch: the server's queue and the evaluator call it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from omniground.data.instruct import decline_phrase
from omniground.errors import UserError
from omniground.files import umask_modes
from omniground.grounding import Box, Span, parse
from omniground.model.modeling_omniground import OmniGroundForCausalLM
from omniground.model.processing_omniground import LOC_GROUP_RE, OmniGroundProcessor, RequestMeta
from omniground.model.tokenizer import BOX_TOKEN, SPAN_TOKEN

logger = logging.getLogger(__name__)
DEFAULT_MODEL = "omniground-tiny"
DECLINE_OVERRULED_AT = 0.5  # a re-asked box's score (its pointer's "there" share) that overrules a decline
CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


class ModelNotFoundError(UserError):
    """No model where the user pointed (one line, exit 2 at the CLI)."""


@dataclass
class ChatResult:
    """One answer: text (boxes normalised to the original image), its boxes and spans with scores."""

    text: str
    boxes: list[Box] = field(default_factory=list)  # normalised to the original image
    spans: list[Span] = field(default_factory=list)  # fractions of the duration
    boxes_pixels: list[tuple[float, float, float, float]] = field(default_factory=list)
    spans_seconds: list[tuple[float, float]] = field(default_factory=list)
    model_text: str = ""  # as generated (model frame, location tokens rendered), for debugging
    problems: list[str] = field(default_factory=list)
    num_tokens: int = 0  # generated tokens, end-of-turn excluded
    finish_reason: str = "stop"  # "stop" (end of turn or a stop string) | "length" (max_new_tokens)
    # the LM's answer this one replaced, else empty: a decline (`OmniGround.overrule_declines`) or a grounding
    # answer that wrote no box or span (`OmniGround.location_after_start`)
    overruled: str = ""


def _media_kind(item: Any) -> str:
    if isinstance(item, (str, os.PathLike)):
        from omniground.media import media_type

        return media_type(item)
    if hasattr(item, "frames") and hasattr(item, "timestamps"):
        return "video"
    if hasattr(item, "samples") and hasattr(item, "sample_rate"):
        return "audio"
    return "image"  # PIL image, array or encoded bytes


class _CallbackStreamer:
    """A `generate` streamer that passes each new piece of answer text to `on_text` as it is made."""

    def __init__(self, api: OmniGround, on_text: Callable[[str], None]):
        self.api, self.on_text, self.ids, self.shown, self.prompt_done = api, on_text, [], "", False
        self.meta: RequestMeta | None = None  # set by chat_batch: boxes are shown in the image's frame

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_done:  # the first call carries the prompt
            self.prompt_done = True
            return
        self.ids += value.reshape(-1).tolist()
        self._emit(final=False)

    def end(self) -> None:
        self._emit(final=True)

    def _emit(self, final: bool) -> None:
        text = self.api.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not final:
            text = text[: _stable_prefix(text)]
            if text.endswith("\ufffd"):  # half a multi-byte character
                return
        processor = self.api.processor
        text = processor.post_process_grounding(processor.render_location_tokens(text), self.meta).text
        if len(text) > len(self.shown) and text.startswith(self.shown):
            self.on_text(text[len(self.shown) :])
            self.shown = text


@contextmanager
def load_report_held_back():
    """Inside, transformers does not print its load report (a wide table in colour codes, even into a log file);
    `OmniGround.from_pretrained` says in one line what starts fresh instead."""
    from transformers.utils import logging as hf_logging

    # a filter, not a level: at WARNING or above transformers also checks a tensor-parallel plan and lists every layer
    reporter, report = hf_logging.get_logger("transformers.modeling_utils"), _LoadReport()
    reporter.addFilter(report)
    try:
        yield
    finally:
        reporter.removeFilter(report)


class _LoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


def fresh_parts(info: dict) -> str:
    """transformers' loading info -> what starts fresh or was left out, one line ("" when everything loaded): the
    parts a checkpoint lacks or that `config_updates` resized, and weights the model does not use."""
    def by_module(keys) -> list[str]:  # "span_pointer (8 tensors)"
        counts = Counter(key.split(".")[0] for key in keys)
        return [f"{m} ({n} tensor{'s' * (n > 1)})" for m, n in sorted(counts.items())]

    said = []
    if missing := by_module(info.get("missing_keys") or ()):
        said.append("new, so fresh: " + ", ".join(missing))
    if resized := [f"{k} ({list(old)} -> {list(new)})" for k, old, new in info.get("mismatched_keys") or ()]:
        said.append("resized, so fresh: " + ", ".join(resized))
    if unused := by_module(info.get("unexpected_keys") or ()):
        said.append("in the checkpoint but not used: " + ", ".join(unused))
    return "; ".join(said)


@contextmanager
def transformers_bars_off():
    """Inside, transformers draws no progress bars: loading or writing a small model's one shard takes a blink,
    and its bar is only noise among the CLI's and the trainer's own output."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


class OmniGround:
    """A model and its processor, ready to answer."""

    def __init__(self, model: OmniGroundForCausalLM, processor: OmniGroundProcessor):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | None = None, dtype=None, **kwargs) -> OmniGround:
        with transformers_bars_off(), load_report_held_back():
            model, info = OmniGroundForCausalLM.from_pretrained(path, dtype=dtype, output_loading_info=True, **kwargs)
        if said := fresh_parts(info):
            logger.warning("%s: %s", path, said)
        if device is not None:
            model.to(device)
        model.eval()
        return cls(model, OmniGroundProcessor.from_pretrained(path, config=model.config))

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Model (safetensors), config, generation config and tokenizer in one directory."""
        with transformers_bars_off():
            self.model.save_pretrained(path)
        umask_modes(path)
        self.processor.save_pretrained(path)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ---- generation ----
    @torch.no_grad()
    def chat_batch(
        self,
        conversations: list[list[dict]],
        media: list[list | None] | None = None,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int | None = None,
        stop: list[str] | None = None,
        streamer=None,
        answer_prefixes: list[str | None] | None = None,
        check_declines: bool = True,
        region_mirror: bool | None = None,
        **generate_kwargs,
    ) -> list[ChatResult]:
        """Answer several conversations in one left-padded batch; one ChatResult each, in order.

        temperature 0 = greedy, > 0 = sampling; `stop` strings end an answer (and are cut from it);
        `streamer` is any HF streamer (batch of one only); `answer_prefixes` give each answer's start
        (prefilled, not generated; part of the returned text). `check_declines`: an image answer that
        declines in words is checked by the region pointer (`overrule_declines`), and a grounding answer (given
        its start) that writes no box or span is re-asked for it (`location_after_start`); not with a `streamer`,
        as what it has shown is not taken back (`omniground.serve.generation` holds a decline back instead).
        `region_mirror` (default: the model's config): each box on an answer's one image is chosen from the
        region pointer's view of the image and of its mirror image (`mirror_view`).
        """
        inputs, metas = self.processor.prepare(conversations, media, add_generation_prompt=True,
                                               answer_prefixes=answer_prefixes)
        inputs = inputs.to(self.device)
        if isinstance(streamer, _CallbackStreamer):
            streamer.meta = metas[0]
        kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=temperature > 0, **generate_kwargs)
        if temperature > 0:
            kw.update(temperature=temperature, top_p=top_p, top_k=top_k)
        if stop:
            kw.update(stop_strings=list(stop), tokenizer=self.tokenizer)
        mirror = self.model.config.region_mirror if region_mirror is None else region_mirror
        self.model.mirror_view = self.mirror_view(conversations, media, metas) \
            if mirror and self.model.region_pointer is not None else None
        try:
            out = self.model.generate(**inputs, return_dict_in_generate=True, output_logits=True, streamer=streamer,
                                      **kw)
        finally:
            self.model.mirror_view = None
        new = out.sequences[:, inputs["input_ids"].shape[1] :]  # (B, T)
        logits = torch.stack(out.logits, dim=1).float()  # (B, T, V)
        probs = logits.softmax(-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)  # (B, T) prob of each chosen token
        pointed = self.model.pointer_confidences()  # None unless the model points at regions / time slots
        results = [self._result(new[i], probs[i], metas[i], stop or [], max_new_tokens, pointed[i] if pointed else None)
                   for i in range(new.shape[0])]
        if check_declines and streamer is None:
            unprefixed = [i for i in range(len(results)) if not (answer_prefixes and answer_prefixes[i])]
            again = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, stop=stop,
                         region_mirror=region_mirror, **generate_kwargs)
            results = self.overrule_declines(conversations, media, results, unprefixed, **again)
            results = self.location_after_start(conversations, media, results, answer_prefixes, **again)
        return results

    def mirror_view(self, conversations: list[list[dict]], media: list[list | None] | None, metas: list[RequestMeta]
                    ) -> Callable[[int, list[int]], tuple[torch.Tensor, torch.Tensor] | None]:
        """`region_mirror`'s second view, for generate() to call where a row is to write a box: (row, the ids it
        generated so far) -> the region pointer's probabilities and patch boxes (`region_view`) for the row's
        conversation and answer so far, said of its image mirrored left to right (`mirrored_text`: "the second
        cup from the left" becomes "... from the right"); None for a row without exactly one image, or with a
        video. Why: two views of one scene err apart, as the region pointer's heads do, and each box is chosen
        from both (test-time augmentation; omniground-tiny's REC about +1.5 points,
        configs/omniground-tiny/README.md)."""
        media = media or [None] * len(conversations)
        loaded: dict[int, list | None] = {}  # each row's media, decoded once

        def view(row: int, generated: list[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
            if row not in loaded:
                kinds = [_media_kind(m) for m in media[row] or []]
                loaded[row] = [self.processor.load_media(k, m) for k, m in zip(kinds, media[row] or [])] \
                    if kinds.count("image") == 1 and "video" not in kinds else None  # (frames are not mirrored)
            answer = self.tokenizer.decode(metas[row].answer_prefix_ids + generated, skip_special_tokens=False)
            if loaded[row] is None or not answer.endswith(BOX_TOKEN):
                return None
            inputs, _ = self.processor.prepare([conversations[row]], [loaded[row]], answer_prefixes=[answer],
                                               mirror=True)
            return self.model.region_view(**inputs.to(self.device))

        return view

    def checks_declines(self, media: list | None) -> bool:
        """Whether `overrule_declines` may re-ask an answer about `media`: one image, and a region pointer that
        weighs "nothing here" (without it a box's score says nothing of presence)."""
        return bool(self.model.config.region_presence and media and len(media) == 1
                    and _media_kind(media[0]) == "image")

    def overrule_declines(self, conversations: list[list[dict]], media: list[list | None] | None,
                          results: list[ChatResult], rows: list[int] | None = None, **kwargs) -> list[ChatResult]:
        """`results` with each image answer that declines in words (`decline_phrase`: "There is no red mug in
        this image.") re-asked with the phrase it declined as its answer's start ("The red mug"); where the
        region pointer then finds the thing (box score >= DECLINE_OVERRULED_AT: more likely there than "nothing
        here"), that answer replaces the decline. Why: a small LM's words tell a thing the image lacks from one
        it shows worse than the pointer's score does: omniground-tiny's declined 6% of the things an image shows
        and 4% of those it lacks, now 0.4% and 3%, while the score tells them apart at AUROC 0.94. Only `rows`
        (default: all) may be re-asked; `kwargs` go to `chat_batch`."""
        media = media or [None] * len(results)
        # the text first: telling an image from a clip may open the file (`media_type`), so only for declines
        phrases = {i: phrase for i in (range(len(results)) if rows is None else rows)
                   if not results[i].boxes and (phrase := decline_phrase(results[i].text))}
        asked = [i for i in phrases if self.checks_declines(media[i])]
        prefixes = [self.processor.grounding_answer_prefix("image", phrases[i]) for i in asked]

        def found(answer: ChatResult) -> bool:
            return any(b.score is not None and b.score >= DECLINE_OVERRULED_AT for b in answer.boxes)

        return self._ask_again(conversations, media, results, asked, prefixes, found, **kwargs)

    def location_after_start(self, conversations: list[list[dict]], media: list[list | None] | None,
                             results: list[ChatResult], answer_prefixes: list[str | None] | None,
                             **kwargs) -> list[ChatResult]:
        """`results` with each grounding answer that wrote no box (image) or span (clip) re-asked with the marker
        right after its given start ("The red mug" -> "The red mug<|box|>"; "" -> "<|span|>"), so that the model
        places what it was asked for; the item's score says how sure (as every one's). A given start, empty on
        a clip, marks a grounding answer (`grounding_answer_prefix`: `ground`, `eval --answer-start`). Why: no
        trained answer form goes on from a named phrase without its box, or answers a clip's grounding
        question without its span (the declines are the images' negatives, `decline_phrase`), yet
        omniground-tiny's LM sometimes trails off ("The anchor to the right of the apple is ale.", "The elephant
        at elephant."). `kwargs` go to `chat_batch`."""
        media = media or [None] * len(results)
        asked, starts = [], []
        for i, start in enumerate(answer_prefixes or []):
            if start is None or not media[i] or len(media[i]) != 1:
                continue
            image = _media_kind(media[i][0]) == "image"
            if not (results[i].boxes if image else results[i].spans):
                asked.append(i)
                starts.append(start + (BOX_TOKEN if image else SPAN_TOKEN))
        return self._ask_again(conversations, media, results, asked, starts, **kwargs)

    def _ask_again(self, conversations: list[list[dict]], media: list[list | None], results: list[ChatResult],
                   rows: list[int], starts: list[str], keep: Callable[[ChatResult], bool] | None = None,
                   **kwargs) -> list[ChatResult]:
        """`results` with rows `rows` asked again, each with its answer's start given (`starts`), unchecked; a new
        answer replaces the first (kept as its `overruled`) where `keep(answer)`, by default always."""
        if not rows:
            return results
        again = self.chat_batch([conversations[i] for i in rows], [media[i] for i in rows], check_declines=False,
                                answer_prefixes=starts, **kwargs)
        results = list(results)
        for i, answer in zip(rows, again):
            if keep is None or keep(answer):
                results[i] = replace(answer, overruled=results[i].text)
        return results

    generate = chat_batch  # the name HF users reach for

    def chat(
        self,
        messages: list[dict],
        media: list | None = None,
        *,
        stream: Callable[[str], None] | None = None,
        **kwargs,
    ) -> ChatResult:
        """One conversation -> its answer. `stream(piece)` is called with the text as it is generated
        (boxes appear whole, already as `[..]`). Other options as `chat_batch`."""
        streamer = _CallbackStreamer(self, stream) if stream is not None else kwargs.pop("streamer", None)
        return self.chat_batch([messages], [media], streamer=streamer, **kwargs)[0]

    def ground(self, media: Any, phrase: str, modality: str | None = None, **kwargs) -> list[Box | Span]:
        """Boxes (image) or time spans (video/audio) for `phrase`, each with a score (mean token probability).

        The answer's start is given where the processor says so (`grounding_answer_prefix`).
        """
        modality = modality or _media_kind(media)
        prompt = self.processor.grounding_prompt(modality, phrase)
        kwargs.setdefault("answer_prefixes", [self.processor.grounding_answer_prefix(modality, phrase)])
        result = self.chat([{"role": "user", "content": prompt}], [media], **kwargs)
        items = result.boxes if modality == "image" else result.spans
        return [i.with_phrase(phrase) for i in items]  # the query names what it asked for

    def stream_chat(self, messages: list[dict], media: list | None = None, **kwargs) -> Iterator[str]:
        """Yield the answer's text as it is generated (generation runs in a worker thread)."""
        import queue

        pieces: queue.Queue = queue.Queue()
        done = object()
        error: list[BaseException] = []

        def work():
            try:
                self.chat(messages, media, stream=pieces.put, **kwargs)
            except BaseException as e:  # re-raised in the caller's thread
                error.append(e)
            finally:
                pieces.put(done)

        threading.Thread(target=work, daemon=True).start()
        while (piece := pieces.get()) is not done:
            yield piece
        if error:
            raise error[0]

    def _result(self, ids: torch.Tensor, probs: torch.Tensor, meta: RequestMeta, stop: list[str],
                max_new_tokens: int, pointed: dict[str, list[float]] | None = None) -> ChatResult:
        end = {self.model.generation_config.pad_token_id, *_as_list(self.model.generation_config.eos_token_id)}
        ids_list = ids.tolist()
        n = next((j for j, t in enumerate(ids_list) if t in end), len(ids_list))
        finish = "length" if n == len(ids_list) and n >= max_new_tokens else "stop"
        ids_list, probs_list = ids_list[:n], probs[:n].tolist()
        # a given answer start is decoded with the rest, so the join is the tokenizer's, not ours
        model_text = self.processor.decode(meta.answer_prefix_ids + ids_list)
        for s in stop:  # the stop string ends the answer and is not part of it (OpenAI semantics)
            if s in model_text:
                model_text, finish = model_text[: model_text.index(s)].rstrip(), "stop"
        g = self.processor.post_process_grounding(model_text, meta)
        box_scores, span_scores = self._item_scores(ids_list, probs_list)
        pointed = pointed or {}
        box_scores = _tail_scores(box_scores, len(g.boxes), pointed.get("box", []))
        span_scores = _tail_scores(span_scores, len(g.spans), pointed.get("span", []))
        boxes = [b if b.score is not None else _with_score(b, box_scores, i) for i, b in enumerate(g.boxes)]
        spans = [s if s.score is not None else _with_score(s, span_scores, i) for i, s in enumerate(g.spans)]
        return ChatResult(g.text, boxes, spans, g.boxes_pixels, g.spans_seconds, model_text, g.problems, n, finish)

    def _item_scores(self, ids: list[int], probs: list[float]) -> tuple[list[float], list[float]]:
        """Mean probability of the tokens that wrote each box / span, in text order."""
        tok = self.tokenizer
        ends = [len(tok.decode(ids[: j + 1], skip_special_tokens=True)) for j in range(len(ids))]
        starts = [0] + ends[:-1]
        raw = tok.decode(ids, skip_special_tokens=True)
        spans_of_text: list[tuple[str, int, int]] = []  # (kind, start, end) in `raw`
        if self.model.config.num_location_bins:
            for m in LOC_GROUP_RE.finditer(raw):
                spans_of_text.append(("box" if m.group(1) == BOX_TOKEN else "span", m.start(), m.end()))
        else:
            for loc in parse(raw, box_frame="norm1").located:
                spans_of_text.append(("box" if isinstance(loc.item, Box) else "span", loc.start, loc.end))
        box_scores, span_scores = [], []
        for kind, a, b in spans_of_text:
            covered = [p for p, s, e in zip(probs, starts, ends) if s < b and e > a]
            if covered:
                (box_scores if kind == "box" else span_scores).append(sum(covered) / len(covered))
        return box_scores, span_scores


def _stable_prefix(text: str) -> int:
    """Length of `text` that holds no unfinished box/span: a `<|box|>`/`<|span|>` location group short of
    its tokens, or an unclosed `[` / `{` of digits (these are shown once whole, in the image's frame)."""
    cut = len(text)
    last = max(text.rfind(BOX_TOKEN), text.rfind(SPAN_TOKEN))
    if last >= 0 and text.count("<loc_", last) < (4 if text.startswith(BOX_TOKEN, last) else 2):
        cut = last
    for opener, closer in (("[", "]"), ("{", "}")):
        at = text.rfind(opener, 0, cut)
        if at >= 0 and closer not in text[at:cut]:
            cut = at
    return cut


def _as_list(x) -> list:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]


def _with_score(item, scores: list[float | None], i: int):
    return replace(item, score=scores[i]) if i < len(scores) and scores[i] is not None else item


def _tail_scores(generated: list[float], count: int, pointed: list[float]) -> list[float | None]:
    """Scores of an answer's `count` boxes (or spans), in text order: the generated tokens' scores belong to
    the last items (those in a given answer start come first, unscored), and a pointed item's score is
    its pointer's confidence -- every item whose marker was at or after the prompt's end is pointed, so
    they too are the last ones."""
    scores: list[float | None] = [None] * max(0, count - len(generated)) + list(generated)[-count:] if count else []
    if pointed and len(pointed) <= count:
        scores[count - len(pointed):] = pointed
    return scores


def load(path_or_name: str | os.PathLike = DEFAULT_MODEL, device: str | None = None, dtype=None,
         **config_updates) -> OmniGround:
    """The shipped default by name, a local checkpoint directory, or a Hugging Face hub id (cache first).
    `config_updates` change fields of the saved config; the parts they add or resize start fresh (e.g.
    more resampler queries), the rest loads as saved.

    Raises ModelNotFoundError (a one-line UserError) when there is no model there.
    """
    if config_updates:  # a resized part starts fresh, as an added part does (`fresh_parts` says which)
        config_updates = {"ignore_mismatched_sizes": True, **config_updates}
    name = str(path_or_name)
    shipped = CHECKPOINT_DIR / name
    if os.sep not in name and "/" not in name and shipped.is_dir():
        return _load_dir(shipped, device, dtype, **config_updates)
    local = Path(name).expanduser()
    if local.is_dir():
        return _load_dir(local, device, dtype, **config_updates)
    if name == DEFAULT_MODEL:
        raise ModelNotFoundError(
            f"the default model is not installed ({shipped} is missing): train it, or pass a checkpoint directory"
        )
    if local.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelNotFoundError(f"no model directory at {local}")
    try:  # a hub id: the local cache first, the network only if the cache lacks it
        return OmniGround.from_pretrained(name, device, dtype, local_files_only=True, **config_updates)
    except OSError:
        pass
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ModelNotFoundError(f"{name!r} is not a local directory nor in the Hugging Face cache (offline mode)")
    try:
        return OmniGround.from_pretrained(name, device, dtype, **config_updates)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelNotFoundError(f"could not load {name!r} from the Hugging Face hub: {first}") from None


def _load_dir(path: Path, device, dtype, **config_updates) -> OmniGround:
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{path} is not an omniground checkpoint (no config.json)")
    try:
        return OmniGround.from_pretrained(path, device, dtype, **config_updates)
    except OSError as e:  # weights or tokenizer files missing
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelNotFoundError(f"{path}: incomplete checkpoint: {first}") from None
