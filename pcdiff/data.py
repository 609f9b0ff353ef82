"""Real data sources for the tiny backbones: English words, Python source lines, any text file.

Every source is a set of short *items* (a word, a line), each encoded character by character into a
fixed block of ``block_length`` positions: the item's characters, then the end symbol repeated to
the end of the block. The block is the unit the CoDD circuit models jointly.

Held-out splits are by item *type*: a held-out item never occurs in training, so held-out loss
measures generalisation rather than memorisation of frequent items.
"""
from __future__ import annotations

import functools
import json
import math
import pathlib
import re
import sysconfig
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["Vocabulary", "ItemData", "load_words", "load_python_lines", "load_text_file", "load_dataset"]

END_TOKEN = "<end>"  # more than one character, so it can never collide with a real character


class Vocabulary:
    """Character vocabulary with an end symbol (output ids) and a mask id (input-only).

    Ids ``0 .. size-1`` are the output vocabulary: the sorted characters, then the end symbol
    (``end_id = size - 1``). ``mask_id = size`` lies outside it: backbones must be able to *read*
    the mask but never predict it.
    """

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"chars must be single characters, got {bad[:5]!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("chars must not contain duplicates")
        if not chars:
            raise ValueError("chars must not be empty")
        self.tokens: list[str] = sorted(chars) + [END_TOKEN]
        self._index = {c: i for i, c in enumerate(self.tokens[:-1])}

    @classmethod
    def from_items(cls, items: Iterable[str]) -> "Vocabulary":
        return cls(sorted(set("".join(items))))

    @property
    def end_id(self) -> int:
        return len(self.tokens) - 1

    @property
    def mask_id(self) -> int:
        return len(self.tokens)

    @property
    def size(self) -> int:
        """Output vocabulary size V (characters + end symbol; the mask id is not counted)."""
        return len(self.tokens)

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def __repr__(self) -> str:
        return f"Vocabulary(size={self.size}, chars={''.join(self.tokens[:-1])!r})"

    def encode(self, item: str, length: int) -> list[int]:
        """Characters of ``item`` then the end symbol up to ``length`` (at least one end symbol)."""
        if len(item) > length - 1:
            raise ValueError(
                f"item {item!r} has {len(item)} characters; block length {length} fits at most "
                f"{length - 1} (one position is reserved for the end symbol)"
            )
        unknown = sorted({c for c in item if c not in self._index})
        if unknown:
            raise ValueError(f"item {item!r} has characters outside the vocabulary: {unknown!r}")
        ids = [self._index[c] for c in item]
        return ids + [self.end_id] * (length - len(ids))

    def _as_list(self, ids) -> list[int]:
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"ids must be one sequence (1-D), got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i <= self.mask_id]
        if bad:
            raise ValueError(f"ids {bad[:5]} are outside [0, {self.mask_id}] (mask id included)")
        return ids

    def decode(self, ids, mask_char: str | None = None) -> str:
        """Characters up to the first end symbol.

        A mask id raises unless ``mask_char`` is given to display it (e.g. for partial samples).
        """
        out = []
        for i in self._as_list(ids):
            if i == self.end_id:
                break
            if i == self.mask_id:
                if mask_char is None:
                    raise ValueError("ids contain the mask id; pass mask_char to display it")
                out.append(mask_char)
            else:
                out.append(self.tokens[i])
        return "".join(out)

    def is_well_formed(self, ids) -> bool:
        """True iff ``ids`` is the encoding of some string: no mask, an end symbol, only ends after it."""
        ids = self._as_list(ids)
        if self.mask_id in ids or self.end_id not in ids:
            return False
        first_end = ids.index(self.end_id)
        return all(i == self.end_id for i in ids[first_end:])

    def to_json(self) -> str:
        return json.dumps({"chars": self.tokens[:-1]})

    @classmethod
    def from_json(cls, text: str) -> "Vocabulary":
        payload = json.loads(text)
        if not isinstance(payload, dict) or "chars" not in payload:
            raise ValueError("text is not a serialized Vocabulary (no 'chars' field)")
        return cls(payload["chars"])


@dataclass(repr=False)
class ItemData:
    """A train / held-out split of items sharing one vocabulary and one block length."""

    train_items: list[str]
    heldout_items: list[str]
    vocab: Vocabulary
    block_length: int
    train_weights: list[float] | None = None
    valid_set: frozenset[str] = field(default_factory=frozenset)
    name: str = "items"

    def __post_init__(self):
        if not self.train_items:
            raise ValueError(f"{self.name}: train_items must not be empty")
        if self.train_weights is not None:
            if len(self.train_weights) != len(self.train_items):
                raise ValueError(
                    f"{self.name}: train_weights has {len(self.train_weights)} entries for "
                    f"{len(self.train_items)} train_items"
                )
            weights = self.train_weights
            if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(w > 0 for w in weights):
                raise ValueError(f"{self.name}: train_weights must be finite, >= 0, not all zero")
        if not self.valid_set:
            self.valid_set = frozenset(self.train_items) | frozenset(self.heldout_items)
        self._train: torch.Tensor | None = None
        self._heldout: torch.Tensor | None = None

    def _encode(self, items: list[str]) -> torch.Tensor:
        rows = [self.vocab.encode(item, self.block_length) for item in items]
        # explicit shape so an empty split still has [0, block_length]
        return torch.tensor(rows, dtype=torch.long).reshape(len(items), self.block_length)

    def encode_train(self) -> torch.Tensor:
        """LongTensor [N_train, block_length], cached."""
        if self._train is None:
            self._train = self._encode(self.train_items)
        return self._train

    def encode_heldout(self) -> torch.Tensor:
        """LongTensor [N_heldout, block_length], cached."""
        if self._heldout is None:
            self._heldout = self._encode(self.heldout_items)
        return self._heldout

    def sample_train_batch(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[batch_size, block_length] training rows, drawn with replacement (by frequency if weighted)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU generator, got device {generator.device}")
        train = self.encode_train()
        if self.train_weights is None:
            rows = torch.randint(len(train), (batch_size,), generator=generator)
        else:
            weights = torch.tensor(self.train_weights, dtype=torch.float64)
            rows = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
        return train[rows]

    def is_real(self, item: str) -> bool:
        return item in self.valid_set

    def __repr__(self) -> str:
        weighting = "frequency-weighted" if self.train_weights is not None else "uniform"
        return (
            f"ItemData({self.name!r}, train={len(self.train_items)}, heldout={len(self.heldout_items)}, "
            f"block_length={self.block_length}, vocab_size={self.vocab.size}, {weighting})"
        )


def _split_types(items: list[str], heldout_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split of distinct items; both halves keep the input order, train is never empty."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    n_heldout = min(round(heldout_fraction * len(items)), len(items) - 1)
    generator = torch.Generator().manual_seed(seed)
    heldout_idx = set(torch.randperm(len(items), generator=generator)[:n_heldout].tolist())
    train = [x for i, x in enumerate(items) if i not in heldout_idx]
    heldout = [x for i, x in enumerate(items) if i in heldout_idx]
    return train, heldout


def _check_max_length(max_length: int) -> None:
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")


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
    train, heldout = _split_types(words, heldout_fraction, seed)
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
    max_length: int = 32, max_lines: int = 50000, heldout_fraction: float = 0.1, seed: int = 0
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
    train, heldout = _split_types(lines, heldout_fraction, seed)
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
    """One item per non-blank line of a UTF-8 text file (line ends stripped, inner spaces kept).

    Repeated lines become one item type weighted by its count. ``max_length=None`` means the
    longest line; otherwise a longer line is an error, not a silent truncation.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found (or not a file): {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    # split on "\n" only: str.splitlines would also break on form feeds and Unicode separators
    numbered = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), start=1)]
    numbered = [(n, line) for n, line in numbered if line.strip()]
    if not numbered:
        raise ValueError(f"{path}: file has no non-blank lines")
    if max_length is None:
        max_length = max(len(line) for _, line in numbered)
    _check_max_length(max_length)
    for n, line in numbered:
        if len(line) > max_length:
            raise ValueError(f"{path}:{n}: line has {len(line)} characters, max_length is {max_length}")
    counts = Counter(line for _, line in numbered)
    items = list(counts)
    train, heldout = _split_types(items, heldout_fraction, seed)
    weighted = any(c > 1 for c in counts.values())
    return ItemData(
        train_items=train,
        heldout_items=heldout,
        vocab=Vocabulary.from_items(items),
        block_length=max_length + 1,
        train_weights=[float(counts[x]) for x in train] if weighted else None,
        name=path.name,
    )


_NAMED = {"words": load_words, "python": load_python_lines}


def load_dataset(name_or_path: str | pathlib.Path, **kwargs) -> ItemData:
    """``"words"``, ``"python"``, or a text-file path; keyword arguments go to that loader.

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
