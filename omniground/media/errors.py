"""The one error type for unreadable media: a single line naming the file and what is wrong."""

from __future__ import annotations

import os


class MediaError(Exception):
    """Raised for media that cannot be used; str(e) is one line fit to show a user as is."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
