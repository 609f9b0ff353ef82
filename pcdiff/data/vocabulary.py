"""The character vocabulary of the tiny backbones: characters, an end symbol, and a mask id outside
the output vocabulary."""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import torch

__all__ = ["Vocabulary", "END_TOKEN"]

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
