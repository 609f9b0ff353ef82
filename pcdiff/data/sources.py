"""Real data sources for the tiny backbones: English words, Python source lines, any text file.

Every source is a set of short *items* (a word, a line), each encoded character by character into a
fixed block of ``block_length`` positions: the item's characters, then the end symbol repeated to
the end of the block. The block is the unit the CoDD circuit models jointly.
"""
from __future__ import annotations

import functools
import pathlib
import re
import sysconfig
from collections import Counter

import torch

from .items import ItemData, split_types
from .puzzles import TASKS, load_task
from .vocabulary import Vocabulary

__all__ = ["load_words", "load_python_lines", "load_text_file", "load_dataset", "MAX_LENGTH", "PYTHON_MAX_LENGTH"]

#: The longest item any loader accepts (the block is one longer): the backbone attends over the whole
#: block and the circuit's size grows with it, so a longer one is a mistake (or a hostile file), not data.
MAX_LENGTH = 1024

#: Python lines' default longest line: blocks of 32 positions, the size of CoDD's code experiments and
#: of the shipped code backbone (pcdiff 0.2 read lines of up to 32, blocks of 33).
PYTHON_MAX_LENGTH = 31


def _check_max_length(max_length: int) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= MAX_LENGTH:
        raise ValueError(f"max_length must be an int in [1, {MAX_LENGTH}], got {max_length!r}")


def load_words(
    num_words: int = 30000, max_length: int = 12, heldout_fraction: float = 0.1, seed: int = 0
) -> ItemData:
    """The ``num_words`` most frequent English words (wordfreq) that are a-z only and short enough.

    Training samples are weighted by word frequency; the held-out words are unseen word types.
    """
    import wordfreq  # a declared dependency, imported here so pcdiff imports stay light

    _check_max_length(max_length)
    if num_words < 2:
        raise ValueError(f"num_words must be >= 2, got {num_words}")
    pattern = re.compile(rf"[a-z]{{1,{max_length}}}")
    words = list(dict.fromkeys(w.lower() for w in wordfreq.top_n_list("en", num_words)))
    words = [w for w in words if pattern.fullmatch(w)]
    train, heldout = split_types(words, heldout_fraction, seed)
    return ItemData(
        train_items=train,
        heldout_items=heldout,
        vocab=Vocabulary.from_items(words),
        block_length=max_length + 1,
        train_weights=[wordfreq.word_frequency(w, "en") for w in train],
        valid_set=frozenset(words),
        name="words",
    )


def _is_printable_ascii(line: str) -> bool:
    return all(" " <= c <= "~" for c in line)


@functools.lru_cache(maxsize=4)
def _stdlib_lines(max_length: int) -> tuple[str, ...]:
    """Distinct stripped stdlib lines, in first-seen order over sorted file paths (~2 s, cached)."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise FileNotFoundError(f"Python standard library directory not found: {root}")
    # site-packages holds whatever happens to be installed, which would make the data vary by machine
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts)
    seen: dict[str, None] = {}
    for path in files:
        for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = raw.strip()
            if line and len(line) <= max_length and _is_printable_ascii(line):
                seen.setdefault(line)
    return tuple(seen)


def load_python_lines(
    max_length: int = PYTHON_MAX_LENGTH, max_lines: int = 50000, heldout_fraction: float = 0.1, seed: int = 0
) -> ItemData:
    """Short lines of the running interpreter's standard-library source (distinct, seeded subset)."""
    _check_max_length(max_length)
    if max_lines < 2:
        raise ValueError(f"max_lines must be >= 2, got {max_lines}")
    every_line = _stdlib_lines(max_length)
    if len(every_line) > max_lines:
        generator = torch.Generator().manual_seed(seed)
        keep = sorted(torch.randperm(len(every_line), generator=generator)[:max_lines].tolist())
        lines = [every_line[i] for i in keep]
    else:
        lines = list(every_line)
    train, heldout = split_types(lines, heldout_fraction, seed)
    return ItemData(
        train_items=train,
        heldout_items=heldout,
        vocab=Vocabulary.from_items(lines),
        block_length=max_length + 1,
        valid_set=frozenset(every_line),  # any real stdlib line counts, not only the sampled ones
        name="python",
    )


def load_text_file(
    path: str | pathlib.Path,
    max_length: int | None = None,
    heldout_fraction: float = 0.1,
    seed: int = 0,
) -> ItemData:
    """One item per non-blank line of a UTF-8 text file (line ends stripped, inner spaces kept; a
    byte-order mark is dropped).

    Repeated lines become one item type weighted by its count. ``max_length=None`` means the
    longest line (at most :data:`MAX_LENGTH`); otherwise a longer line is an error, not a silent
    truncation.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found (or not a file): {path}")
    text = _read_utf8(path)
    # split on "\n" only: str.splitlines would also break on form feeds and Unicode separators
    numbered = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), start=1)]
    numbered = [(n, line) for n, line in numbered if line.strip()]
    if not numbered:
        raise ValueError(f"{path}: file has no non-blank lines")
    if max_length is None:
        n, longest = max(numbered, key=lambda entry: len(entry[1]))
        if len(longest) > MAX_LENGTH:
            raise ValueError(f"{path}:{n}: line has {len(longest)} characters, more than the longest item "
                             f"accepted ({MAX_LENGTH}); is this a file of short items, one per line?")
        max_length = len(longest)
    _check_max_length(max_length)
    for n, line in numbered:
        if len(line) > max_length:
            raise ValueError(f"{path}:{n}: line has {len(line)} characters, max_length is {max_length}")
    counts = Counter(line for _, line in numbered)
    items = list(counts)
    train, heldout = split_types(items, heldout_fraction, seed)
    weighted = any(c > 1 for c in counts.values())
    return ItemData(
        train_items=train,
        heldout_items=heldout,
        vocab=Vocabulary.from_items(items),
        block_length=max_length + 1,
        train_weights=[float(counts[x]) for x in train] if weighted else None,
        name=path.name,
    )


def _read_utf8(path: pathlib.Path) -> str:
    """The file's text; a ValueError naming the file, the line and the byte where it is not UTF-8."""
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(f"{path}: the file is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")                   # "-sig": a leading BOM is not part of the first item
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 ({err.reason} at byte {err.start})") from None


_NAMED = {"words": load_words, "python": load_python_lines,
          **{name: functools.partial(load_task, name) for name in TASKS}}   # the puzzles: latin-4, ...


def load_dataset(name_or_path: str | pathlib.Path, **kwargs) -> ItemData:
    """``"words"``, ``"python"``, a puzzle (``"permutations-4"``, ``"latin-4"``, ``"sudoku-4"``, ...:
    :mod:`pcdiff.data.puzzles`), or a text-file path; keyword arguments go to that loader.

    A file literally called ``words`` must be given as a path, e.g. ``./words``.
    """
    if isinstance(name_or_path, str) and name_or_path in _NAMED:
        return _NAMED[name_or_path](**kwargs)
    path = pathlib.Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(
            f"dataset {str(name_or_path)!r} is neither a known name ({', '.join(_NAMED)}) "
            "nor an existing file"
        )
    return load_text_file(path, **kwargs)
