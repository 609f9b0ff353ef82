"""The two semirings a circuit is evaluated in, as objects: what a leaf and a sum node compute, and
which child the top-down walk picks.

* :data:`SUM_PRODUCT`: sums add (log-sum-exp); the walk draws a child in proportion to weight ×
  child value, which makes it an exact posterior sample.
* :data:`MAX_PRODUCT`: sums take the max; the walk takes the argmax (a MAP / Viterbi completion).

The upward pass (:mod:`.upward`) and the top-down walk (:mod:`structures.queries.topdown`) call these
methods and never ask which semiring they run in.
"""
from __future__ import annotations

import torch

from ..logspace import gumbel_argmax
from ..types import CandidateEvidence
from .candidates import max_candidate_leaves, sum_candidate_leaves
from .kernels import WeightTable, log_matmul_exp, log_max_product

__all__ = ["Semiring", "SumProduct", "MaxProduct", "SUM_PRODUCT", "MAX_PRODUCT", "semiring"]


class Semiring:
    """Shapes: x [B, G, C] child values, tables [K, C] / [B, K, C] (``shared``: one for every group)
    or [G, K, C] / [B, G, K, C], soft evidence [B, G, V]; every method returns [B, G, K]."""

    name: str
    #: whether the pass may track "every value is finite" and take the cheaper kernels while it holds
    tracks_finiteness: bool

    def mix(self, x: torch.Tensor, table: WeightTable, shared: bool, finite: bool) -> torch.Tensor:
        """A bucket of sum groups over its children's values."""
        raise NotImplementedError

    def mix_one(self, x: torch.Tensor, table: WeightTable, finite: bool) -> torch.Tensor:
        """One sum group (x [B, C] -> [B, K]): every layer of a chain."""
        return self.mix(x.unsqueeze(1), table, True, finite).squeeze(1)

    def free_leaves(self, table: WeightTable, batch: int, groups: int) -> torch.Tensor:
        """Leaves of unobserved positions without soft evidence."""
        raise NotImplementedError

    def soft_leaves(self, soft: torch.Tensor, table: WeightTable, shared: bool) -> torch.Tensor:
        """Leaves of unobserved positions under dense soft evidence."""
        raise NotImplementedError

    def candidate_leaves(self, cand: CandidateEvidence, table: WeightTable, shared: bool) -> torch.Tensor:
        """Leaves of unobserved positions under candidate (top-k) evidence."""
        raise NotImplementedError

    def choose(self, scores: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The top-down walk's pick along the last dim of ``scores`` (log weight + child value)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<semiring {self.name}>"


class SumProduct(Semiring):
    name, tracks_finiteness = "sum", True

    def mix(self, x, table, shared, finite):
        return log_matmul_exp(x, table, shared=shared, finite_inputs=finite)

    def mix_one(self, x, table, finite):
        if table.log.dim() == 2:                                   # plain 2-D GEMM: the chain's fast path
            return log_matmul_exp(x, table, shared=True, finite_inputs=finite)
        return super().mix_one(x, table, finite)

    def free_leaves(self, table, batch, groups):
        return table.log.new_zeros(batch, groups, table.log.shape[-2])        # every row sums to one

    def soft_leaves(self, soft, table, shared):
        return log_matmul_exp(soft, table, shared=shared, finite_inputs=None)

    def candidate_leaves(self, cand, table, shared):
        return sum_candidate_leaves(cand, table, shared)

    def choose(self, scores, generator):
        return gumbel_argmax(scores, generator)


class MaxProduct(Semiring):
    name, tracks_finiteness = "max", False

    def mix(self, x, table, shared, finite):
        return log_max_product(x, table.log.unsqueeze(-3) if shared else table.log)

    def free_leaves(self, table, batch, groups):
        best = table.log.amax(-1)                                               # [K] or [G, K]
        return best.expand(batch, groups, table.log.shape[-2])

    def soft_leaves(self, soft, table, shared):
        return log_max_product(soft, table.log.unsqueeze(0) if shared else table.log)

    def candidate_leaves(self, cand, table, shared):
        return max_candidate_leaves(cand, table, shared)

    def choose(self, scores, generator):
        return scores.argmax(-1)


SUM_PRODUCT, MAX_PRODUCT = SumProduct(), MaxProduct()
_BY_NAME = {s.name: s for s in (SUM_PRODUCT, MAX_PRODUCT)}


def semiring(which: str | Semiring) -> Semiring:
    """A :class:`Semiring` from itself or its name ("sum" or "max")."""
    if isinstance(which, Semiring):
        return which
    if not isinstance(which, str) or which not in _BY_NAME:
        got = repr(which[:40]) if isinstance(which, str) else f"a {type(which).__name__}"  # never a full repr
        raise ValueError(f"semiring must be 'sum' or 'max' (or a Semiring), got {got}")
    return _BY_NAME[which]
