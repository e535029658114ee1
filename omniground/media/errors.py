"""The one error type for unreadable media: a single line naming the file and what is wrong."""

from __future__ import annotations

import os
from pathlib import Path

from omniground.errors import UserError


class MediaError(UserError):
    """Raised for media that cannot be used; str(e) is one line fit to show a user as is."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def require_file(path: str | os.PathLike, max_bytes: int) -> Path:
    """Check that `path` is a readable, non-empty file of at most `max_bytes` before any decoder sees it.

    Decoders report these cases with confusing messages ("Invalid data found", "cannot identify"), so
    they are answered here, plainly.
    """
    path = Path(path)
    if not path.exists():
        raise MediaError(path, "file not found")
    if not path.is_file():
        raise MediaError(path, "not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise MediaError(path, "file is empty (0 bytes)")
    if size > max_bytes:
        raise MediaError(path, f"file is too large ({size:,} bytes > limit {max_bytes:,})")
    if not os.access(path, os.R_OK):
        raise MediaError(path, "file is not readable (permission denied)")
    return path


def describe(exc: BaseException) -> str:
    """A decoder exception as one short line: its type and the first line of its message."""
    # FFmpeg and OS errors carry the bare reason in .strerror; str() would repeat errno and path.
    lines = str(getattr(exc, "strerror", None) or exc).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
