"""A data set of short items: a train / held-out split by item *type*, one vocabulary, one block
length. A held-out item never occurs in training, so held-out loss measures generalisation rather
than memorisation of frequent items."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .empirical import EmpiricalDistribution
from .vocabulary import Vocabulary

__all__ = ["ItemData", "split_types"]


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

    def train_distribution(self) -> EmpiricalDistribution:
        """The distribution training rows are drawn from (:meth:`sample_train_batch`), with exact marginals."""
        weights = None if self.train_weights is None else torch.tensor(self.train_weights, dtype=torch.float64)
        return EmpiricalDistribution(self.encode_train(), weights, vocab_size=self.vocab.size)

    def is_real(self, item: str) -> bool:
        return item in self.valid_set

    def __repr__(self) -> str:
        weighting = "frequency-weighted" if self.train_weights is not None else "uniform"
        return (
            f"ItemData({self.name!r}, train={len(self.train_items)}, heldout={len(self.heldout_items)}, "
            f"block_length={self.block_length}, vocab_size={self.vocab.size}, {weighting})"
        )


def split_types(items: list[str], heldout_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split of distinct items; both halves keep the input order, train is never empty."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    n_heldout = min(round(heldout_fraction * len(items)), len(items) - 1)
    generator = torch.Generator().manual_seed(seed)
    heldout_idx = set(torch.randperm(len(items), generator=generator)[:n_heldout].tolist())
    train = [x for i, x in enumerate(items) if i not in heldout_idx]
    heldout = [x for i, x in enumerate(items) if i in heldout_idx]
    return train, heldout
