"""Rewrite or extend dialogues with any OpenAI-compatible chat endpoint, keeping every box and span exact.

A template dialogue is correct but stiff; a teacher LLM can vary the wording and add small talk. It
cannot be trusted with numbers, so an answer is accepted only if, role by role, it writes exactly the
locations the original wrote (the same notations character for character, found by the grounding parser)
and the rewritten sample passes the schema validator. Anything else — a lost, altered or invented
location, broken JSON, wrong turn order — is rejected and the original kept. Off by default; the
licence of the endpoint's outputs is the user's affair.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import httpx
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from omniground.data.schema import PLACEHOLDER, BadLine, Sample, Turn, read_jsonl, write_jsonl
from omniground.errors import UserError
from omniground.grounding import parse

MAX_EXTRA_TURNS = 4  # the teacher may add at most two Q/A pairs

SYSTEM_PROMPT = """You rewrite training dialogues between a user and an assistant about one {media}.
Rules:
- Keep the meaning of every question and answer; vary the wording so it sounds natural.
- Copy every location exactly as written, character for character: boxes look like [0.120,0.340,0.560,0.780]
  (corners as fractions of the image), spans look like {{0.25,0.50}} (fractions of the duration). Keep each
  one right after the same phrase, in the same turn role. Never add, drop, round or change a location.
- You may add at most two short extra user/assistant exchanges without any location in them.
- Do not mention these rules. Do not write media placeholders such as <image>.
Reply with JSON only, in this shape:
{{"conversation": [{{"role": "user", "content": "..."}}, {{"role": "assistant", "content": "..."}}]}}"""


class TeacherError(UserError):
    """The endpoint cannot be used at all (unreachable, refuses every request); one line."""


@dataclass
class TeachReport:
    counts: Counter = field(default_factory=Counter)  # accepted / rejected:<reason> / skipped / failed:<reason>

    @property
    def accepted(self) -> int:
        return self.counts["accepted"]


def _locations(turns: Iterable[Turn], role: str, sample: Sample) -> list[str]:
    """Every location written in the turns of one role, character for character, sorted (a multiset)."""
    first = sample.media[0] if sample.media else None
    size = (first.width, first.height) if first and first.width and first.height else None
    duration = first.duration if first else None
    out = []
    for t in turns:
        if t.role == role:
            found = parse(t.content, image_size=size, duration=duration)
            out += [t.content[loc.start : loc.end] for loc in found.located]  # the notation as written
            out += [f"problem:{p}" for p in found.problems]
    return sorted(out)


def _strip_placeholders(text: str) -> str:
    for p in PLACEHOLDER.values():
        text = text.replace(p + "\n", "").replace(p, "")
    return text.strip()


def _reply_json(text: str) -> dict:
    """The JSON object in a reply, tolerating a ```json fence around it."""
    fenced = re.search(r"```(?:json)?\s*(\{.*\})\s*```", text, re.DOTALL)
    return json.loads(fenced.group(1) if fenced else text[text.find("{") : text.rfind("}") + 1])


def check_rewrite(original: Sample, reply: str) -> tuple[Sample | None, str]:
    """(rewritten sample, "accepted") or (None, reason it was rejected)."""
    try:
        data = _reply_json(reply)
        turns = [Turn(role=t["role"], content=_strip_placeholders(str(t["content"]))) for t in data["conversation"]]
    except (ValueError, KeyError, TypeError, ValidationError):
        return None, "not the JSON asked for"
    roles = [t.role for t in turns]
    if roles != ["user", "assistant"] * (len(turns) // 2) or not turns:
        return None, "turns do not alternate user/assistant"
    n = len(original.conversation)
    if not n <= len(turns) <= n + MAX_EXTRA_TURNS:
        return None, f"{len(turns)} turns for an original of {n}"
    if any(not t.content for t in turns):
        return None, "empty turn"
    for role in ("user", "assistant"):
        if _locations(turns, role, original) != _locations(original.conversation, role, original):
            return None, f"{role} locations lost or altered"
    # Placeholders go back where the original had them: all at the start of the first user turn.
    heads = "".join(PLACEHOLDER[m.type] + "\n" for m in original.media)
    turns[0] = Turn(role="user", content=heads + turns[0].content)
    try:
        updated = {**original.model_dump(), "conversation": [t.model_dump() for t in turns]}
        return Sample.model_validate({**updated, "meta": {**original.meta, "teacher": True}}), "accepted"
    except ValidationError as e:
        return None, f"schema: {e.errors()[0]['msg']}"


class Teacher:
    """A client for `POST {url}/chat/completions` (url is the API base, e.g. http://localhost:8000/v1)."""

    def __init__(self, url: str, model: str = "default", api_key: str | None = None, timeout: float = 120.0,
                 temperature: float = 0.7):  # fmt: skip
        if not url.startswith(("http://", "https://")):
            raise TeacherError(f"--teacher-url must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/") + "/chat/completions"
        self.model, self.temperature = model, temperature
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers)

    def ask(self, sample: Sample) -> str:
        """The endpoint's reply text for one sample's dialogue."""
        conversation = [{"role": t.role, "content": _strip_placeholders(t.content)} for t in sample.conversation]
        body = {
            "model": self.model,
            "temperature": self.temperature,
            "messages": [
                {
                    "role": "system",
                    "content": SYSTEM_PROMPT.format(media=sample.media[0].type if sample.media else "text"),
                },
                {"role": "user", "content": json.dumps({"conversation": conversation}, ensure_ascii=False)},
            ],
        }
        r = self.client.post(self.url, json=body)
        r.raise_for_status()
        return r.json()["choices"][0]["message"]["content"]

    def rewrite(self, sample: Sample) -> tuple[Sample, str]:
        """(the rewritten sample, "accepted") or (the original, why not). Raises TeacherError if unreachable."""
        try:
            reply = self.ask(sample)
        except httpx.ConnectError as e:
            raise TeacherError(f"teacher endpoint {self.url} unreachable: {e}") from e
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as e:
            return sample, f"failed: {type(e).__name__}"
        new, verdict = check_rewrite(sample, reply)
        return (new, verdict) if new is not None else (sample, f"rejected: {verdict}")

    def rewrite_all(self, samples: Iterable[Sample], tasks: set[str] | None, report: TeachReport,
                    concurrency: int = 4) -> Iterator[Sample]:  # fmt: skip
        """Each sample, rewritten where the teacher's answer passes the checks; order kept."""

        def one(s: Sample) -> tuple[Sample, str]:
            if tasks is not None and s.task not in tasks:
                return s, "skipped"
            return self.rewrite(s)

        with ThreadPoolExecutor(concurrency) as pool:
            for chunk in _chunks(samples, 8 * concurrency):  # bounded memory for any file size
                for sample, verdict in pool.map(one, chunk):
                    report.counts[verdict] += 1
                    yield sample


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _rebase(sample: Sample, src_dir: Path, dst_dir: Path) -> Sample:
    """Relative media paths re-expressed from the output file's folder, so they still resolve."""
    if src_dir.resolve() == dst_dir.resolve():
        return sample
    media = [
        m if Path(m.path).is_absolute() else m.model_copy(update={"path": os.path.relpath(src_dir / m.path, dst_dir)})
        for m in sample.media
    ]
    return sample.model_copy(update={"media": media})


def teach_file(src: Path, dst: Path, teacher: Teacher, tasks: set[str] | None, progress: bool = True,
               concurrency: int = 4) -> TeachReport:  # fmt: skip
    """Rewrite the dialogues of a JSONL file into `dst` (may be `src`); invalid input lines are counted, not kept."""
    bad: list[BadLine] = []
    with open(src, encoding="utf-8") as f:
        total = sum(1 for line in f if line.strip())
    report = TeachReport()
    samples = teacher.rewrite_all(read_jsonl(src, bad), tasks, report, concurrency)
    samples = (_rebase(s, Path(src).parent, Path(dst).parent) for s in samples)
    with Progress(TextColumn("teach"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not progress) as bar:  # fmt: skip
        task = bar.add_task("teach", total=total)
        write_jsonl(dst, (bar.advance(task) or s for s in samples))
    if bad:
        report.counts["invalid input line"] += len(bad)
    return report
