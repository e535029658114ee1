"""Writing outputs so that a failure never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it is renamed onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def drop_partial_outputs(folder: str | os.PathLike) -> None:
    """Delete what `atomic_output` was writing in `folder` when its process was killed: nothing reads it, a
    resumed run writes it anew, and a refit's part is 600 MB."""
    for f in Path(folder).glob(".*.part*"):
        f.unlink(missing_ok=True)


def umask_modes(folder: str | os.PathLike) -> None:
    """Give the safetensors files in `folder` the mode any new file gets under the umask: safetensors >= 0.8
    writes them 0600 whatever the umask (safetensors#782), a model other users (a server's, a container's) cannot
    read beside a config.json they can."""
    umask = os.umask(0)
    os.umask(umask)
    for f in Path(folder).glob("*.safetensors"):
        f.chmod(0o666 & ~umask)
