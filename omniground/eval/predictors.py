"""Systems under evaluation: anything that turns a sample's question and media into answer text.

The runner scores text, parsed by the grounding language, so an omniground checkpoint and any
OpenAI-compatible chat endpoint (vLLM serving Qwen2.5-VL, our own server, ...) are judged by the
same code on the same samples.
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Protocol, Sequence

import httpx

from omniground.data.schema import PLACEHOLDER, Sample


class Predictor(Protocol):
    name: str
    box_frame: str  # how numbers > 1 in its boxes are to be read: "auto", "pixel" or "norm1000"
    # (optional) padded_square: bool, boxes relative to the image padded to a centred square

    def predict(self, samples: Sequence[Sample], root: Path) -> list[str]:
        """Answer text for the first user turn of each sample (media paths relative to `root`)."""
        ...


def question_of(sample: Sample) -> str:
    """The first user turn, the question every benchmark sample asks."""
    return next(t.content for t in sample.conversation if t.role == "user")


def reference_answer(sample: Sample) -> str:
    return next(t.content for t in sample.conversation if t.role == "assistant")


def _data_url(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def openai_messages(sample: Sample, root: Path, prompt_suffix: str = "") -> list[dict]:
    """The sample's question as OpenAI chat content parts: image_url, input_audio, and the de-facto video_url."""
    text = question_of(sample)
    parts: list[dict] = []
    for i, m in enumerate(sample.media):
        path = sample.media_path(i, root)
        text = text.replace(PLACEHOLDER[m.type], "", 1)
        if m.type == "image":
            parts.append({"type": "image_url", "image_url": {"url": _data_url(path)}})
        elif m.type == "video":
            parts.append({"type": "video_url", "video_url": {"url": _data_url(path)}})
        else:
            fmt = path.suffix.lstrip(".").lower() or "wav"
            parts.append({"type": "input_audio",
                          "input_audio": {"data": base64.b64encode(path.read_bytes()).decode(), "format": fmt}})
    parts.append({"type": "text", "text": (text.strip() + (" " + prompt_suffix if prompt_suffix else "")).strip()})
    return [{"role": "user", "content": parts}]


class EndpointPredictor:
    """Any OpenAI-compatible `/v1/chat/completions` endpoint, greedy decoding."""

    def __init__(
        self,
        url: str,
        model: str,
        api_key: str | None = None,
        box_frame: str = "auto",
        prompt_suffix: str = "",
        max_tokens: int = 256,
        timeout: float = 120.0,
        padded_square: bool = False,
    ):
        self.url = url.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions" if self.url.endswith("/v1") else "/v1/chat/completions"
        self.model, self.box_frame, self.prompt_suffix, self.max_tokens = model, box_frame, prompt_suffix, max_tokens
        self.padded_square = padded_square
        self.name = f"endpoint:{model}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers)

    def predict(self, samples: Sequence[Sample], root: Path) -> list[str]:
        out = []
        for s in samples:
            body = {"model": self.model, "messages": openai_messages(s, root, self.prompt_suffix),
                    "temperature": 0, "max_tokens": self.max_tokens}
            try:
                r = self.client.post(self.url, json=body)
                r.raise_for_status()
                out.append(r.json()["choices"][0]["message"]["content"] or "")
            except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
                raise EndpointError(f"{self.url}: {type(e).__name__}: {e}".splitlines()[0]) from e
        return out


class EndpointError(RuntimeError):
    """The endpoint failed; the runner stops, keeping every prediction made so far."""
