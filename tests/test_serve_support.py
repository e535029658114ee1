"""Shared helpers for the serving tests (no tests here): a scripted model, a live server, small media.

`ScriptedOmniGround` is the one fake: a real tiny random OmniGround whose sampler is forced to write a
fixed answer (through a logits processor), so tokenisation, streaming, stopping, batching, parsing and
mapping boxes back to pixels all run for real -- only the model's choice of tokens is scripted.
"""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time

import numpy as np
import torch
from media_files import write_wav
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from omniground.model import OmniGround, build_tiny

_TINY: OmniGround | None = None


def tiny_model() -> OmniGround:
    """One random tiny model per test process (building it costs seconds)."""
    global _TINY
    if _TINY is None:
        torch.manual_seed(0)
        _TINY = build_tiny()
        _TINY.model.eval()
    return _TINY


class _ForceText(LogitsProcessor):
    """Every row writes `ids` and then end-of-turn, whatever the logits said."""

    def __init__(self, ids: list[int], eos: int):
        self.ids, self.eos, self.prompt_len = ids, eos, None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_len is None:
            self.prompt_len = input_ids.shape[1]
        step = input_ids.shape[1] - self.prompt_len
        forced = self.ids[step] if step < len(self.ids) else self.eos
        out = torch.full_like(scores, float("-inf"))
        out[:, forced] = 0.0
        return out


class ScriptedOmniGround(OmniGround):
    """A real tiny OmniGround that always answers `answer` (model frame); records what it was asked."""

    def __init__(self, answer: str, base: OmniGround | None = None):
        base = base or tiny_model()
        super().__init__(base.model, base.processor)
        self.answer = answer
        self.calls: list[dict] = []  # one per chat_batch call: conversations and batch size

    def chat_batch(self, conversations, media=None, **kwargs):
        self.calls.append({"conversations": conversations, "batch": len(conversations)})
        ids = self.tokenizer(self.answer, add_special_tokens=False)["input_ids"]
        forced = _ForceText(ids, self.tokenizer.convert_tokens_to_ids(self.tokenizer.eos_token))
        kwargs["logits_processor"] = LogitsProcessorList([forced])
        return super().chat_batch(conversations, media, **kwargs)

    generate = chat_batch


# ---- a live server on loopback (what real clients talk to) ----
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app):
    """uvicorn serving `app` in a thread on a free loopback port; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# ---- small media ----
def png_bytes(width: int = 96, height: int = 64, color=(240, 240, 240)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def wav_bytes(seconds: float = 2.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    write_wav(buf, (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16), rate)
    return buf.getvalue()


