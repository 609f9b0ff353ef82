"""Writing files and folders atomically: a reader (or a run killed half-way) sees the old file or the
new one, never half of one. The one implementation every writer of the project uses.

Every write fills a temporary ``.<name>.<random>.tmp`` beside its target (a file, or a whole folder
for :func:`atomic_write_folder`) and renames it into place. While it writes, the writer holds an
exclusive ``flock`` on its temporary, so a temporary that nobody holds was left by a killed write:
the next write of the same target deletes it (:func:`remove_stale_temporaries`). Without ``fcntl``
(Windows) only temporaries untouched for :data:`STALE_SECONDS` count as abandoned.
"""
from __future__ import annotations

import glob
import os
import pathlib
import shutil
import tempfile
import time
from typing import Callable

try:
    import fcntl
except ImportError:                                   # pragma: no cover - Windows
    fcntl = None

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_folder", "remove_stale_temporaries",
           "check_new_folder", "STALE_SECONDS"]

#: Without flock, a temporary is taken for abandoned once it has not changed for this long.
STALE_SECONDS = 24 * 3600


def _lock(fd: int, wait: bool = True) -> bool:
    """flock ``fd`` exclusively; False if ``wait`` is False and another open file holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _temporary(target: pathlib.Path, folder: bool) -> tuple[int, pathlib.Path]:
    """A fresh temporary beside ``target`` and an open, locked descriptor of it."""
    for _ in range(3):
        options = dict(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        if folder:
            name = tempfile.mkdtemp(**options)
            fd = os.open(name, os.O_RDONLY)
        else:
            fd, name = tempfile.mkstemp(**options)
        _lock(fd)
        # another process's cleanup may have taken the unlocked newborn; then make another
        try:
            if os.path.samestat(os.fstat(fd), os.stat(name)):
                return fd, pathlib.Path(name)
        except FileNotFoundError:
            pass
        os.close(fd)
    raise OSError(f"could not keep a temporary beside {target} (something keeps deleting them)")


def _abandoned(tmp: pathlib.Path) -> bool:
    """True when no live writer holds ``tmp`` (symbolic links are never touched)."""
    if tmp.is_symlink():
        return False
    if fcntl is None:
        try:
            return time.time() - tmp.stat().st_mtime > STALE_SECONDS
        except OSError:
            return False
    try:
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        return _lock(fd, wait=False)
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike, name: str = "*") -> list[pathlib.Path]:
    """Delete the temporaries that killed writes left in ``folder`` for targets matching the glob
    ``name``; temporaries a live writer holds are kept. Returns what was deleted."""
    folder = pathlib.Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(f".{name}.*.tmp"):
        if _abandoned(tmp):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """``write(tmp)`` fills a temporary file beside ``path``, which then replaces ``path`` in one
    rename (after an fsync, so a crash cannot leave an empty file behind the new name).

    ``write`` should write into the file it is given rather than replace it: a replaced file is
    re-locked only once ``write`` returns."""
    path = pathlib.Path(path)
    remove_stale_temporaries(path.parent, glob.escape(path.name))
    fd, tmp = _temporary(path, folder=False)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            if not os.path.samestat(os.fstat(fd), os.fstat(handle.fileno())):
                _lock(handle.fileno())                 # ``write`` made a new file: hold that one
            os.fsync(handle.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    """``text`` (UTF-8) written to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_new_folder(path: str | os.PathLike, what: str = "folder") -> pathlib.Path:
    """Raise unless :func:`atomic_write_folder` can create ``path``: it must not exist (or be an empty
    folder) and its nearest existing parent must be a writable folder. ``what`` names it in errors."""
    path = pathlib.Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise FileExistsError(f"{what} {path} already exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise FileExistsError(f"{what} {path} already exists and is not empty; pcdiff never overwrites "
                              "a folder: choose a new one or delete it")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"{what} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path}: cannot create it, {parent} is not writable")
    return path


def _fsync_folder(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError:                                   # some platforms cannot sync a folder
        pass


def atomic_write_folder(path: str | os.PathLike, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """``write(tmp)`` fills a temporary folder beside ``path``, which is then renamed to ``path``: a
    reader (or a later run) sees the whole folder or none of it, never old files beside new ones.

    ``path`` must not exist yet or be an empty folder (see :func:`check_new_folder`): an existing
    folder is never replaced, so a finished run cannot be lost to a later one that dies half-way."""
    path = pathlib.Path(path)
    check_new_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, glob.escape(path.name))
    fd, tmp = _temporary(path, folder=True)
    try:
        write(tmp)
        _fsync_folder(fd)
        try:
            os.rename(tmp, path)                      # POSIX: replaces an empty folder, fails on anything else
        except OSError:
            check_new_folder(path)                    # the precise reason, if the target appeared meanwhile
            raise
        parent = os.open(path.parent, os.O_RDONLY)
        try:
            _fsync_folder(parent)
        finally:
            os.close(parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)        # gone already after a successful rename
        os.close(fd)
    return path
