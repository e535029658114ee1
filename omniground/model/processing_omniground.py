"""OmniGroundProcessor: media + chat messages -> model inputs; generated ids -> text + boxes/spans.

All preprocessing lives here (the model owns none), and it is deterministic: images and video
frames are padded to a centred square (or stretched) and resized -- no random crop at inference,
the original's bug. Video frames keep their real timestamps; audio is cut into windows over the
whole clip, each with its start time.

One request becomes one `ModelExample` (token ids, optional labels, media arrays); `collate` pads a
list of them into a batch. Inference (`prepare`) and training (`build_training_example` + `collate`)
share that path, so what the model is trained on is exactly what it is asked at inference.

Box/span text goes through `omniground.grounding` both ways. With `aspect_mode="pad"` boxes are
written in the padded-square frame the model sees (the original's frame), and mapped back to the
original image when answers are parsed. With `num_location_bins > 0`, boxes/spans in the text become
`<|box|><loc_a><loc_b><loc_c><loc_d>` / `<|span|><loc_a><loc_b>` for the model and are rendered back
into `[x1,y1,x2,y2]` / `{t1,t2}` before parsing, so users always see the same answer format.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, BatchFeature, PreTrainedTokenizerBase

from omniground.grounding import Box, Span, format_box, format_span, parse
from omniground.model.modeling_omniground import OmniGroundConfig
from omniground.model.tokenizer import AUDIO_PAD, BOX_TOKEN, IMAGE_PAD, SPAN_TOKEN, VIDEO_PAD, loc_token

if TYPE_CHECKING:
    from omniground.data.schema import Sample

PLACEHOLDERS = {"image": "<image>", "video": "<video>", "audio": "<audio>"}
PAD_TOKENS = {"image": IMAGE_PAD, "video": VIDEO_PAD, "audio": AUDIO_PAD}
IGNORE_INDEX = -100
PLACEHOLDER_RE = re.compile(r"<(image|video|audio)>")  # where media go in a message (serve neutralises typed ones)
# A box/span written with location tokens (the model's own vocabulary, not the grounding language).
LOC_GROUP_RE = re.compile(rf"({re.escape(BOX_TOKEN)}|{re.escape(SPAN_TOKEN)})((?:\s*<loc_\d+>)+)")
LOC_BIN_RE = re.compile(r"<loc_(\d+)>")  # one location token's bin

# What `ground` asks. Audio's is one of the training questions (omniground.data.instruct): the one it asked
# before ("When can you hear: {phrase}", no training question) scored 0.845 R@1 at IoU 0.5 on 400 fresh clips,
# each of 12 training questions 0.885-0.925; this one 0.912, and unlike the 0.925 one it keeps the shipped
# example's span (configs/omniground-tiny/README.md). On video the wordings tried were within 1.5 points.
DEFAULT_GROUNDING_PROMPTS = {
    "image": "<image>\nGive the bounding box of: {phrase}",
    "video": "<video>\nWhen does this happen in the video: {phrase}",
    "audio": "<audio>\nAt what time can you hear this: {phrase}?",
}


@dataclass
class RequestMeta:
    """What post-processing needs to map answers back: the first image's size, the clip duration."""

    image_size: tuple[int, int] | None = None  # (width, height) of the original image
    duration: float | None = None  # seconds of the first video/audio
    modalities: list[str] = field(default_factory=list)
    answer_prefix_ids: list[int] = field(default_factory=list)  # the answer's given start, already in the prompt


@dataclass
class ModelExample:
    """One request or training sample, tokenised and with its media preprocessed, not yet padded."""

    input_ids: list[int]
    labels: list[int] | None  # IGNORE_INDEX on everything but assistant turns; None at inference
    images: list[np.ndarray] = field(default_factory=list)  # each (3, S, S)
    videos: list[tuple[np.ndarray, np.ndarray, float]] = field(default_factory=list)  # (F,3,S,S), (F,) s, duration
    audios: list[tuple[np.ndarray, np.ndarray, float]] = field(default_factory=list)  # (W,mels,T), (W,) s, duration
    meta: RequestMeta = field(default_factory=RequestMeta)


@dataclass
class Grounding:
    """A decoded answer: text in the grounding language plus its boxes and spans, ready to use."""

    text: str  # the answer as the user sees it, boxes as [x1,y1,x2,y2] normalised to the original image
    boxes: list[Box]  # normalised to the original image
    spans: list[Span]  # fractions of the duration
    boxes_pixels: list[tuple[float, float, float, float]]
    spans_seconds: list[tuple[float, float]]
    plain_text: str = ""
    problems: list[str] = field(default_factory=list)


def _is_own_notation(notation: str) -> bool:
    """`[x1,y1,x2,y2]` / `{t1,t2}` (rewritten for the model); not prose seconds nor a foreign JSON box."""
    return notation[:1] in "[{" and '"' not in notation


# What a mirror swaps in what is said of an image (`OmniGroundProcessor.mirrored_text`), case kept
MIRRORED_WORDS = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost"}
MIRRORED_WORDS_RE = re.compile(r"\b(?:leftmost|rightmost|left|right)\b", re.IGNORECASE)


def _mirrored_word(word: str) -> str:
    other = MIRRORED_WORDS[word.lower()]
    return other.upper() if word.isupper() and len(word) > 1 else other.capitalize() if word[0].isupper() else other


def rewrite_locations(text: str, write, **parse_kwargs) -> str:
    """`text` with each of our box/span notations replaced by `write(Box | Span)` (None keeps it)."""
    out, pos = [], 0
    for loc in parse(text, **parse_kwargs).located:
        notation = text[loc.start : loc.end]
        new = write(loc.item) if _is_own_notation(notation) else None
        out += [text[pos : loc.start], notation if new is None else new]
        pos = loc.end
    return "".join(out) + text[pos:]


# ------------------------------------------------------------------------------------------------
# Media preprocessing
# ------------------------------------------------------------------------------------------------


def _frame_to_square(image: Image.Image, size: int, aspect_mode: str, fill: tuple[int, int, int]) -> Image.Image:
    if aspect_mode == "pad":
        w, h = image.size
        side = max(w, h)
        if w != h:
            canvas = Image.new("RGB", (side, side), fill)
            canvas.paste(image, ((side - w) // 2, (side - h) // 2))
            image = canvas
    elif aspect_mode != "resize":
        raise ValueError(f"aspect_mode must be 'pad' or 'resize', got {aspect_mode!r}")
    return image.resize((size, size), Image.Resampling.BICUBIC)


class OmniGroundProcessor:
    """Turns requests into batched model inputs and generated ids back into grounded answers."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: OmniGroundConfig):
        self.tokenizer = tokenizer
        self.config = config
        self.mean = np.asarray(config.image_mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(config.image_std, dtype=np.float32)[:, None, None]
        self._fill = tuple(int(round(255 * m)) for m in config.image_mean)
        self._mel = None

    # ---- saving ----
    def save_pretrained(self, path: str | os.PathLike) -> None:
        self.tokenizer.save_pretrained(path)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, config: OmniGroundConfig | None = None) -> OmniGroundProcessor:
        config = config or OmniGroundConfig.from_pretrained(path)
        return cls(AutoTokenizer.from_pretrained(path), config)

    # ---- media ----
    def load_media(self, kind: str, item: Any) -> Any:
        """Paths/bytes -> decoded media via omniground.media; decoded objects pass through."""
        if not isinstance(item, (str, bytes, os.PathLike)):
            return item
        from omniground import media

        if kind == "image":
            return media.load_image(item)
        if kind == "video":
            return media.sample_frames(item, self.config.num_video_frames)
        return media.load_audio(item, sample_rate=self.config.audio_sample_rate)

    def image_tensor(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """RGB image -> normalised (3, S, S) float32."""
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        image = _frame_to_square(image.convert("RGB"), self.config.image_size, self.config.aspect_mode, self._fill)
        x = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (x - self.mean) / self.std

    def video_arrays(self, video) -> tuple[np.ndarray, np.ndarray, float]:
        """VideoFrames -> frames (F, 3, S, S), timestamps (F,) seconds, duration."""
        frames = np.stack([self.image_tensor(f) for f in video.frames])
        duration = float(video.info.duration) if getattr(video, "info", None) is not None else float(video.duration)
        return frames, np.asarray(video.timestamps, dtype=np.float32), max(duration, 1e-3)

    def audio_arrays(self, audio) -> tuple[np.ndarray, np.ndarray, float]:
        """Audio -> log-mel windows (W, n_mels, T) over the whole clip, their starts (W,) seconds, duration."""
        from omniground import media

        if audio.sample_rate != self.config.audio_sample_rate:
            raise ValueError(f"audio must be {self.config.audio_sample_rate} Hz, got {audio.sample_rate} Hz")
        window, max_w = float(self.config.audio_window_seconds), self.config.max_audio_windows
        duration = len(audio.samples) / audio.sample_rate
        # Long clips keep the window length and spread max_w windows evenly from start to end.
        hop = window if duration <= window * max_w else (duration - window) / (max_w - 1)
        windows, starts = media.audio_windows(audio, window, hop)
        if len(windows) == 0:
            raise ValueError("audio is empty")
        windows, starts = windows[:max_w], np.asarray(starts[:max_w], dtype=np.float32)  # rounding may add one
        return self.log_mel(windows), starts, max(duration, 1e-3)

    def log_mel(self, windows: np.ndarray) -> np.ndarray:
        """(W, L) samples -> (W, n_mels, 100 * window_s) Whisper-style log-mel features."""
        if self._mel is None:
            from transformers import WhisperFeatureExtractor

            self._mel = WhisperFeatureExtractor(
                feature_size=self.config.num_mel_bins, sampling_rate=self.config.audio_sample_rate,
                hop_length=self.config.audio_sample_rate // 100, n_fft=400,
                chunk_length=max(1, int(np.ceil(self.config.audio_window_seconds))),
            )
        feats = self._mel(list(windows), sampling_rate=self.config.audio_sample_rate, return_tensors="np")
        return feats["input_features"][..., : self.config.audio_frames_per_window].astype(np.float32)

    # ---- grounding text <-> model text ----
    def to_model_text(self, text: str, image_size: tuple[int, int] | None, duration: float | None = None) -> str:
        """Rewrite `[x1,y1,x2,y2]` / `{t1,t2}` (normalised to the original media) into the model's frame/tokens."""

        def write(item: Box | Span) -> str:
            if isinstance(item, Span):
                return self._span_text(item)
            if self.config.aspect_mode == "pad" and image_size is not None:
                item = item.to_padded_square(*image_size)
            return self._box_text(item)

        return rewrite_locations(text, write, image_size=image_size, duration=duration)

    def _bin(self, v: float) -> str:
        n = self.config.num_location_bins
        return loc_token(int(round(min(1.0, max(0.0, v)) * (n - 1))))

    def _box_text(self, box: Box) -> str:
        if self.config.num_location_bins:
            return BOX_TOKEN + "".join(self._bin(v) for v in box.xyxy)
        return format_box(box)

    def _span_text(self, span: Span) -> str:
        if self.config.num_location_bins:
            return SPAN_TOKEN + self._bin(span.start) + self._bin(span.end)
        return format_span(span)

    def render_location_tokens(self, text: str) -> str:
        """`<|box|><loc_a>..` -> `[..]`, `<|span|><loc_a><loc_b>` -> `{..}` (still in the model's frame)."""
        n = max(1, self.config.num_location_bins - 1)

        def render(m: re.Match) -> str:
            vals = [int(k) / n for k in LOC_BIN_RE.findall(m.group(2))]
            if m.group(1) == BOX_TOKEN and len(vals) == 4:
                x1, y1, x2, y2 = vals
                return format_box((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
            if m.group(1) == SPAN_TOKEN and len(vals) == 2:
                return format_span((min(vals), max(vals)))
            return ""  # malformed group: drop it rather than show raw tokens

        return LOC_GROUP_RE.sub(render, text)

    # ---- one request -> one example ----
    def _normalise_messages(self, messages: list[dict], media: list | None) -> tuple[list[dict], list[tuple[str, Any]]]:
        """Messages with str or list-of-parts content -> str content with placeholders + ordered media."""
        given = list(media or [])
        out, ordered = [], []
        for msg in messages:
            content = msg["content"]
            if isinstance(content, str):
                text = content
                for m in PLACEHOLDER_RE.finditer(content):
                    if not given:
                        raise ValueError(f"message has a {m.group(0)} placeholder but no media was given for it")
                    ordered.append((m.group(1), given.pop(0)))
            else:
                pieces = []
                for part in content:
                    kind = part.get("type")
                    if kind == "text":
                        pieces.append(part["text"])
                    elif kind in PLACEHOLDERS:
                        item = part.get(kind, part.get("path", part.get("url")))
                        if item is None:
                            item = given.pop(0) if given else None
                        if item is None:
                            raise ValueError(f"{kind} part has no {kind!r} value")
                        pieces.append(PLACEHOLDERS[kind])
                        ordered.append((kind, item))
                    else:
                        raise ValueError(f"unknown content part type {kind!r}")
                text = "\n".join(pieces)
            out.append({"role": msg["role"], "content": text})
        if given:
            raise ValueError(f"{len(given)} media item(s) given but no placeholder uses them")
        return out, ordered

    def mirrored_text(self, text: str, image_size: tuple[int, int] | None) -> str:
        """Text about an image, as said of the image mirrored left to right (`region_mirror`'s view): "left" and
        "right" swapped (and "leftmost" / "rightmost"), boxes mirrored -- those in the grounding language
        (normalised to the image) and those in location tokens (the model's square frame)."""
        last = self.config.num_location_bins - 1

        def box_tokens(m: re.Match) -> str:
            bins = [int(k) for k in LOC_BIN_RE.findall(m.group(2))]
            if m.group(1) != BOX_TOKEN or len(bins) != 4:
                return m.group(0)
            x1, y1, x2, y2 = bins
            return BOX_TOKEN + "".join(loc_token(v) for v in (last - x2, y1, last - x1, y2))

        text = LOC_GROUP_RE.sub(box_tokens, text)
        text = rewrite_locations(text, lambda item: format_box(Box(1 - item.x2, item.y1, 1 - item.x1, item.y2))
                                 if isinstance(item, Box) else None, image_size=image_size)
        return MIRRORED_WORDS_RE.sub(lambda m: _mirrored_word(m.group(0)), text)

    def encode(
        self,
        messages: list[dict],
        media: list | None = None,
        *,
        add_generation_prompt: bool = True,
        with_labels: bool = False,
        max_length: int | None = None,
        answer_prefix: str | None = None,
        mirror: bool = False,
    ) -> ModelExample:
        """One conversation (+ its media, in placeholder order) -> a `ModelExample`.

        `answer_prefix` (with the generation prompt): the start of the assistant's answer, given rather
        than generated -- one prefill pass instead of a decode step per token.
        `mirror`: its images mirrored left to right and its text said of them (`mirrored_text`).
        Media may be paths, bytes, or already decoded (PIL image, VideoFrames, Audio). Locations in the
        text are normalised to the original media and rewritten into the model's frame/tokens here.
        `max_length` cuts the tail of the text; a cut through media tokens raises ValueError.
        """
        messages, ordered = self._normalise_messages(messages, media)
        ex = ModelExample(input_ids=[], labels=None)
        for kind, item in ordered:
            item = self.load_media(kind, item)
            ex.meta.modalities.append(kind)
            if kind == "image":
                ex.meta.image_size = ex.meta.image_size or tuple(item.size)
                pixels = self.image_tensor(item)  # the centred padded square mirrored: the mirror image's square
                ex.images.append(np.ascontiguousarray(pixels[..., ::-1]) if mirror else pixels)
            elif kind == "video":
                ex.videos.append(self.video_arrays(item))
                ex.meta.duration = ex.meta.duration or ex.videos[-1][2]
            else:
                ex.audios.append(self.audio_arrays(item))
                ex.meta.duration = ex.meta.duration or ex.audios[-1][2]
        counts = self.config.media_token_counts()
        for msg in messages:
            said = self.mirrored_text(msg["content"], ex.meta.image_size) if mirror else msg["content"]
            text = self.to_model_text(said, ex.meta.image_size, ex.meta.duration)
            msg["content"] = PLACEHOLDER_RE.sub(lambda m: PAD_TOKENS[m.group(1)] * counts[m.group(1)], text)
        ex.input_ids, ex.labels = self._tokenize(messages, add_generation_prompt, with_labels)
        if answer_prefix:
            said = self.mirrored_text(answer_prefix, ex.meta.image_size) if mirror else answer_prefix
            text = self.to_model_text(said, ex.meta.image_size, ex.meta.duration)
            ex.meta.answer_prefix_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            ex.input_ids += ex.meta.answer_prefix_ids
        if max_length is not None and len(ex.input_ids) > max_length:
            media_ids = {self.config.image_token_id, self.config.video_token_id, self.config.audio_token_id}
            if media_ids & set(ex.input_ids[max_length:]):
                raise ValueError(f"{len(ex.input_ids)} tokens; max_length {max_length} would cut through media")
            ex.input_ids = ex.input_ids[:max_length]
            ex.labels = ex.labels[:max_length] if ex.labels is not None else None
        return ex

    def build_training_example(
        self, sample: Sample, root: str | os.PathLike, max_length: int | None = None
    ) -> ModelExample:
        """A schema `Sample` (media paths relative to `root`) -> token ids + labels for the trainer.

        Labels keep only the assistant turns (each with its closing token); system/user turns, the
        template's role markers and media tokens are IGNORE_INDEX. Batch with `collate(..., "right")`.
        """
        messages = [{"role": t.role, "content": t.content} for t in sample.conversation]
        media = [Path(sample.media_path(i, root)) for i in range(len(sample.media))]
        return self.encode(messages, media, add_generation_prompt=False, with_labels=True, max_length=max_length)

    def _tokenize(self, messages: list[dict], add_generation_prompt: bool, with_labels: bool):
        tok = self.tokenizer
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=with_labels)
        ids = enc["input_ids"]
        if not with_labels:
            return ids, None
        # Assistant character ranges: what the template adds for turn i beyond the prompt for it,
        # without trailing whitespace (the model stops at its end-of-turn token).
        regions = []
        for i, msg in enumerate(messages):
            if msg["role"] != "assistant":
                continue
            prompt = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            upto = tok.apply_chat_template(messages[: i + 1], tokenize=False).rstrip()
            if upto.startswith(prompt) and text.startswith(upto):
                regions.append((len(prompt), len(upto)))
            else:  # a template that rewrites earlier turns: fall back to the content itself
                at = text.find(msg["content"], regions[-1][1] if regions else 0)
                if at >= 0:
                    regions.append((at, at + len(msg["content"])))
        labels = [
            t if e > s and any(a <= s < b for a, b in regions) else IGNORE_INDEX
            for t, (s, e) in zip(ids, enc["offset_mapping"])
        ]
        return ids, labels

    # ---- examples -> batch ----
    def collate(self, examples: Sequence[ModelExample], padding_side: str = "right") -> BatchFeature:
        """Pad examples into one batch: "left" for generation, "right" for training.

        input_ids / attention_mask (/ labels) (B, L); pixel_values (Ni, 3, S, S) for all images of the
        batch in order; video_* and audio_* likewise, their steps padded with a step mask.
        """
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        pad_id = self.tokenizer.pad_token_id
        longest = max(len(ex.input_ids) for ex in examples)
        with_labels = all(ex.labels is not None for ex in examples)
        rows: dict[str, list] = {"input_ids": [], "attention_mask": [], **({"labels": []} if with_labels else {})}
        for ex in examples:
            n = longest - len(ex.input_ids)

            def place(seq, fill, n=n):
                return [fill] * n + seq if padding_side == "left" else seq + [fill] * n

            rows["input_ids"].append(place(ex.input_ids, pad_id))
            rows["attention_mask"].append(place([1] * len(ex.input_ids), 0))
            if with_labels:
                rows["labels"].append(place(ex.labels, IGNORE_INDEX))
        batch: dict[str, torch.Tensor] = {k: torch.tensor(v, dtype=torch.long) for k, v in rows.items()}
        images = [im for ex in examples for im in ex.images]
        videos = [v for ex in examples for v in ex.videos]
        audios = [a for ex in examples for a in ex.audios]
        if images:
            batch["pixel_values"] = torch.from_numpy(np.stack(images))  # (Ni, 3, S, S)
        if videos:
            batch.update(_stack_steps(videos, "video"))
        if audios:
            batch.update(_stack_steps(audios, "audio"))
        return BatchFeature(batch)

    def prepare(
        self,
        conversations: list[dict] | list[list[dict]],
        media: list | list[list] | None = None,
        *,
        add_generation_prompt: bool = True,
        return_labels: bool = False,
        padding_side: str = "left",
        max_length: int | None = None,
        answer_prefixes: list[str | None] | None = None,
        mirror: bool = False,
    ) -> tuple[BatchFeature, list[RequestMeta]]:
        """Batch of conversations (+ their media lists) -> model inputs and per-request meta.

        A single conversation (a list of {"role", "content"} dicts) is a batch of one.
        `answer_prefixes`: per conversation, the answer's given start; `mirror`: images mirrored (see `encode`).
        """
        if conversations and isinstance(conversations[0], dict):
            conversations, media = [conversations], [media] if media is not None else None
        media = media if media is not None else [None] * len(conversations)
        if len(media) != len(conversations):
            raise ValueError(f"{len(conversations)} conversations but {len(media)} media lists")
        prefixes = answer_prefixes if answer_prefixes is not None else [None] * len(conversations)
        examples = [
            self.encode(msgs, items, add_generation_prompt=add_generation_prompt, with_labels=return_labels,
                        max_length=max_length, answer_prefix=prefix, mirror=mirror)
            for msgs, items, prefix in zip(conversations, media, prefixes)
        ]
        return self.collate(examples, padding_side), [ex.meta for ex in examples]

    def __call__(self, conversations, media=None, **kwargs) -> BatchFeature:
        return self.prepare(conversations, media, **kwargs)[0]

    # ---- generated ids -> answers ----
    def decode(self, token_ids: Sequence[int] | torch.Tensor) -> str:
        """Generated ids -> answer text in the grounding language (model frame), special tokens removed."""
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        return self.render_location_tokens(text).strip()

    def batch_decode(self, sequences) -> list[str]:
        return [self.decode(s) for s in sequences]

    def post_process_grounding(self, text: str, meta: RequestMeta | None = None) -> Grounding:
        """Answer text (model frame) -> boxes in the original image (pixels and normalised) and spans."""
        meta = meta or RequestMeta()
        padded = self.config.aspect_mode == "pad" and meta.image_size is not None
        result = parse(text, image_size=meta.image_size, duration=meta.duration, box_frame="norm1",
                       padded_square=padded)
        user_text = text
        if padded:  # show the user boxes in the original image's frame
            user_text = rewrite_locations(
                text, lambda item: format_box(item) if isinstance(item, Box) else None,
                image_size=meta.image_size, box_frame="norm1", padded_square=True,
            )
        w, h = meta.image_size or (None, None)
        return Grounding(
            text=user_text,
            boxes=result.boxes,
            spans=result.spans,
            boxes_pixels=[b.to_pixels(w, h) for b in result.boxes] if w else [],
            spans_seconds=[s.to_seconds(meta.duration) for s in result.spans] if meta.duration else [],
            plain_text=result.plain_text,
            problems=result.problems,
        )

    def grounding_prompt(self, modality: str, phrase: str) -> str:
        prompts = {**DEFAULT_GROUNDING_PROMPTS, **(self.config.grounding_prompts or {})}
        return prompts[modality].format(phrase=phrase)

    def grounding_answer_prefix(self, modality: str, phrase: str) -> str:
        """How a grounding answer starts, given rather than generated: on images "The <phrase>" (a trained
        answer form; echoing the phrase token by token was most of an image query's time); on clips nothing,
        "" (the answer is still marked as a grounding one: `OmniGround.location_after_start`)."""
        if modality != "image":
            return ""
        return "The " + re.sub(r"^(?:the|an?)\s+", "", phrase.strip(), flags=re.IGNORECASE)


def _stack_steps(items: list[tuple[np.ndarray, np.ndarray, float]], kind: str) -> dict[str, torch.Tensor]:
    """Per-item (steps, times, duration) with different step counts -> padded tensors + step mask."""
    n, most = len(items), max(len(x[0]) for x in items)
    values = np.zeros((n, most, *items[0][0].shape[1:]), dtype=np.float32)  # (N, S, ...)
    mask = np.zeros((n, most), dtype=bool)  # (N, S)
    times = np.zeros((n, most), dtype=np.float32)  # (N, S) seconds
    for i, (x, t, _) in enumerate(items):
        values[i, : len(x)], mask[i, : len(x)], times[i, : len(t)] = x, True, t
    durations = torch.tensor([d for _, _, d in items], dtype=torch.float32)  # (N,)
    if kind == "video":
        return {"video_pixel_values": torch.from_numpy(values), "video_frame_mask": torch.from_numpy(mask),
                "video_timestamps": torch.from_numpy(times), "video_durations": durations}
    return {"audio_features": torch.from_numpy(values), "audio_window_mask": torch.from_numpy(mask),
            "audio_starts": torch.from_numpy(times), "audio_durations": durations}
