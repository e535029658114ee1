"""OpenAI chat messages -> the model's conversation and decoded media, reading nothing it should not.

Media arrive as content parts: `image_url`, `video_url` (vLLM's de-facto part), `audio_url`, and
`input_audio` (base64 + format). A URL is a `data:` URL, or -- only when the server was started with
`--allow-media-dir DIR` -- a `file://` URL or plain path of a file inside DIR. Remote http(s) URLs
are never fetched (a server that fetches arbitrary URLs is an SSRF hole).

Path safety: the path is resolved (symlinks followed, `..` removed) and must lie inside DIR; the
file is then opened without following a final symlink and, on Linux, the opened descriptor's real
path is checked again, so a link swapped in between the check and the open cannot escape DIR.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from omniground import media as M
from omniground.media.errors import MediaError
from omniground.model.processing_omniground import PLACEHOLDER_RE, RequestMeta

_DATA_URL_RE = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I)
_PART_KIND = {"image_url": "image", "video_url": "video", "audio_url": "audio", "input_audio": "audio"}
_ROLES = ("system", "user", "assistant", "developer")


class InputError(Exception):
    """A request the client must fix; becomes an OpenAI-style error body with this status."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


@dataclass(frozen=True)
class MediaPolicy:
    """What the server may read: data URLs always, local files only inside `allow_dir`."""

    allow_dir: Path | None = None
    max_media_bytes: int = 64 * 1024 * 1024
    num_video_frames: int = 8
    audio_sample_rate: int = 16000

    def __post_init__(self):
        if self.allow_dir is not None:
            object.__setattr__(self, "allow_dir", Path(self.allow_dir).resolve(strict=True))


@dataclass
class Conversation:
    messages: list[dict]  # {"role", "content": str with <image>/<video>/<audio> placeholders}
    media: list[Any]  # decoded, in placeholder order
    meta: RequestMeta


def read_file_inside(ref: str, allow_dir: Path | None, max_bytes: int, param: str) -> bytes:
    """The bytes of the file `ref` names, which must resolve to a regular file inside `allow_dir`."""
    if allow_dir is None:
        raise InputError("local files are not served (start the server with --allow-media-dir DIR, "
                         "or send the media as a data: URL)", param, 403, "file_access_disabled")
    path = Path(unquote(urlparse(ref).path) if ref.startswith("file://") else ref)
    if not path.is_absolute():
        path = allow_dir / path
    outside = InputError("path is outside the allowed media directory", param, 403, "path_not_allowed")
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        if not os.path.normpath(path).startswith(str(allow_dir) + os.sep):
            raise outside from None
        raise InputError("file not found in the media directory", param, 404, "file_not_found") from None
    if not resolved.is_relative_to(allow_dir):
        raise outside
    try:
        fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        raise InputError("file cannot be opened", param, 403, "path_not_allowed") from None
    with os.fdopen(fd, "rb") as f:
        real = Path(os.path.realpath(f"/proc/self/fd/{fd}")) if os.path.isdir("/proc/self/fd") else resolved
        if not real.is_relative_to(allow_dir) or not os.path.isfile(real):
            raise outside
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputError(f"media file is larger than {max_bytes:,} bytes", param, 413, "media_too_large")
    return data


def read_url(url: str, policy: MediaPolicy, param: str) -> bytes:
    """A content part's URL -> the media bytes (data: URL, or a file inside the allowed directory)."""
    if not isinstance(url, str) or not url:
        raise InputError("url must be a non-empty string", param)
    m = _DATA_URL_RE.match(url)
    if m:
        payload = url[m.end() :]
        if not m.group("b64"):
            raise InputError("data URL must be base64 encoded (data:<mime>;base64,...)", param)
        return _b64(payload, policy.max_media_bytes, param)
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https", "ftp"):
        raise InputError("remote URLs are not fetched; send the media as a data: URL", param, 400, "remote_url")
    if scheme not in ("", "file") and len(scheme) > 1:  # "C:" style drive letters are paths, not schemes
        raise InputError(f"unsupported URL scheme {scheme!r}", param)
    return read_file_inside(url, policy.allow_dir, policy.max_media_bytes, param)


def _b64(payload: str, max_bytes: int, param: str) -> bytes:
    if len(payload) * 3 // 4 > max_bytes:
        raise InputError(f"media is larger than {max_bytes:,} bytes", param, 413, "media_too_large")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("media is not valid base64", param) from None
    if not data:
        raise InputError("media is empty", param)
    return data


def decode_media(kind: str, data: bytes, policy: MediaPolicy, param: str, suffix: str = "") -> Any:
    """Bytes -> PIL image / VideoFrames / Audio; unusable media -> InputError naming the content part."""
    try:
        if kind == "image":
            return M.load_image(data)
        # The video/audio decoders read files: give them a private temporary one.
        with tempfile.TemporaryDirectory(prefix="omniground-") as tmp:
            path = Path(tmp) / f"media{suffix}"
            path.write_bytes(data)
            found = M.media_type(path)
            if found != kind and not (kind == "audio" and found == "video"):
                raise InputError(f"expected {kind}, got {found}", param)
            if kind == "video":
                return M.sample_frames(path, policy.num_video_frames)
            return M.load_audio(path, sample_rate=policy.audio_sample_rate)
    except MediaError as e:
        raise InputError(f"unusable {kind}: {e.problem}", param) from None


def to_conversation(messages: list, policy: MediaPolicy) -> Conversation:
    """OpenAI `messages` -> model conversation; media decoded in order; errors name the offending param."""
    if not isinstance(messages, list) or not messages:
        raise InputError("messages must be a non-empty list", "messages")
    out, media, meta = [], [], RequestMeta()
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise InputError("each message must be an object", where)
        role = msg.get("role")
        if role not in _ROLES:
            raise InputError(f"role must be one of {', '.join(_ROLES)}; got {role!r}", f"{where}.role")
        content = msg.get("content")
        if content is None:
            content = ""
        if isinstance(content, str):
            out.append({"role": _role(role), "content": _neutralise(content)})
            continue
        if not isinstance(content, list):
            raise InputError("content must be a string or a list of content parts", f"{where}.content")
        pieces = []
        for j, part in enumerate(content):
            at = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise InputError("text part needs a string 'text'", f"{at}.text")
                pieces.append(_neutralise(text))
            elif kind in _PART_KIND:
                if role != "user":
                    raise InputError("media parts are only accepted in user messages", at)
                item = _read_part(part, kind, policy, at)
                _note(meta, _PART_KIND[kind], item)
                media.append(item)
                pieces.append(f"<{_PART_KIND[kind]}>")
            else:
                raise InputError(f"unsupported content part type {kind!r}", f"{at}.type")
        out.append({"role": _role(role), "content": "\n".join(pieces)})
    if out[-1]["role"] == "assistant":
        raise InputError("the last message must not be an assistant message", f"messages[{len(out) - 1}].role")
    return Conversation(out, media, meta)


def _read_part(part: dict, kind: str, policy: MediaPolicy, at: str) -> Any:
    if kind == "input_audio":
        body = part.get("input_audio")
        if not isinstance(body, dict) or not isinstance(body.get("data"), str):
            raise InputError("input_audio needs {'data': base64, 'format': 'wav'|'mp3'|...}", f"{at}.input_audio")
        fmt = str(body.get("format") or "wav").lower()
        if not re.fullmatch(r"[a-z0-9]{1,8}", fmt):
            raise InputError("input_audio.format must be a short extension like 'wav'", f"{at}.input_audio.format")
        data = _b64(body["data"], policy.max_media_bytes, f"{at}.input_audio.data")
        return decode_media("audio", data, policy, f"{at}.input_audio", suffix=f".{fmt}")
    body = part.get(kind)
    url = body.get("url") if isinstance(body, dict) else body if isinstance(body, str) else None
    if url is None:
        raise InputError(f"{kind} needs a 'url'", f"{at}.{kind}")
    data = read_url(url, policy, f"{at}.{kind}.url")
    return decode_media(_PART_KIND[kind], data, policy, f"{at}.{kind}")


def _note(meta: RequestMeta, kind: str, item: Any) -> None:
    """Record what answers are mapped back to: the first image's size, the first clip's duration."""
    meta.modalities.append(kind)
    if kind == "image" and meta.image_size is None:
        meta.image_size = tuple(item.size)
    elif kind == "video" and meta.duration is None:
        meta.duration = max(float(item.info.duration), 1e-3)
    elif kind == "audio" and meta.duration is None:
        meta.duration = max(float(item.duration), 1e-3)


def _role(role: str) -> str:
    return "system" if role == "developer" else role


def _neutralise(text: str) -> str:
    """Literal `<image>` typed by a user is text, not a request for media the caller never sent."""
    return PLACEHOLDER_RE.sub(lambda m: f"< {m.group(1)}>", text)
