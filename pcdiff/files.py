"""Writing files atomically: a reader (or a run killed half-way) sees the old file or the new one,
never half of one. The one implementation every writer of the project uses."""
from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Callable

__all__ = ["atomic_write", "atomic_write_text"]


def atomic_write(path: str | os.PathLike, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """``write(tmp)`` fills a temporary file beside ``path``, which then replaces ``path`` in one
    rename (after an fsync, so a crash cannot leave an empty file behind the new name)."""
    path = pathlib.Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = pathlib.Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    """``text`` (UTF-8) written to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
