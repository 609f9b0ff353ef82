"""A finite table of rows with weights, read as a distribution whose marginals are exact by enumeration.

The in-distribution items of the demo's controls are drawn from exactly such a distribution (the
training items, by frequency where the data is weighted), so scoring them under it gives the true
conditional entropy those items are drawn with: the floor no model of that distribution can beat. It
answers the same query as a compiled circuit, ``log_prob(x, observed=None)``, so one scoring rule
(``log p(x_O) − log p(x)``) serves both.
"""
from __future__ import annotations

import torch

__all__ = ["EmpiricalDistribution"]

# comparisons per chunk (items × rows × positions): bounds the [chunk, M, L] bool tensor at ~32 MB
_CHUNK_ELEMENTS = 1 << 25


class EmpiricalDistribution:
    """p(x) = Σ_j w_j [row_j = x] / Σ_j w_j over the rows ``[M, L]`` of a table (repeats add up).

    Args:
        rows: LongTensor ``[M, L]``, M ≥ 1.
        weights: ``[M]`` finite, ≥ 0, not all zero; ``None`` for uniform.
    """

    def __init__(self, rows: torch.Tensor, weights: torch.Tensor | None = None):
        if not isinstance(rows, torch.Tensor) or rows.dim() != 2 or len(rows) == 0 or rows.is_floating_point():
            raise ValueError(f"rows must be an integer tensor [M, L] with M >= 1, got "
                             f"{getattr(rows, 'shape', type(rows).__name__)}")
        if weights is None:
            weights = torch.ones(len(rows), dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (len(rows),):
            raise ValueError(f"weights must have shape [{len(rows)}] (one per row), got {list(weights.shape)}")
        if not bool(torch.isfinite(weights).all() and (weights >= 0).all() and (weights > 0).any()):
            raise ValueError("weights must be finite, >= 0 and not all zero")
        self.rows = rows.long().cpu()
        self.log_weights = (weights / weights.sum()).log()

    @property
    def length(self) -> int:
        return self.rows.shape[1]

    def log_prob(self, x: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
        """``[N]`` float64: log p(x), or the exact marginal log p(x_O) summing out the positions where
        ``observed`` ``[N, L]`` is False; −inf where no row agrees."""
        return self._query(x, observed, marginals=False)

    def log_marginals(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """``[N, L]`` float64: log p(x_i | x_O) at every position i, each token's exact marginal given
        the observed ones alone (0 at observed positions). Summed over the unobserved positions, its
        negative is this distribution's own one-step (factorized) score. Raises where no row agrees
        with an item's observed tokens (the conditional is undefined there)."""
        return self._query(x, observed, marginals=True)

    def _query(self, x: torch.Tensor, observed: torch.Tensor | None, marginals: bool) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.length:
            raise ValueError(f"x must have shape [N, {self.length}], got {list(x.shape)}")
        if observed is not None and observed.shape != x.shape:
            raise ValueError(f"observed must have the shape of x {list(x.shape)}, got {list(observed.shape)}")
        x = x.long().cpu()
        ignored = torch.zeros_like(x, dtype=torch.bool) if observed is None else ~observed.bool().cpu()
        # the marginals hold a float64 [n, M, L] tensor per chunk, 8 bytes where the bools hold one
        chunk = max(1, _CHUNK_ELEMENTS // (self.rows.numel() * (8 if marginals else 1)))
        pieces = []
        for start in range(0, len(x), chunk):
            xs, free = x[start:start + chunk], ignored[start:start + chunk]
            equal = self.rows.unsqueeze(0) == xs.unsqueeze(1)                                      # [n, M, L]
            agrees = (equal | free.unsqueeze(1)).all(-1)                                           # [n, M]
            log_mass = torch.where(agrees, self.log_weights, -torch.inf)
            if not marginals:
                pieces.append(log_mass.logsumexp(-1))
                continue
            # the rows agreeing with x_O that also hold x_i at position i, over the rows agreeing with x_O
            joint = torch.where(equal, log_mass.unsqueeze(-1), -torch.inf).logsumexp(1)           # [n, L]
            evidence = log_mass.logsumexp(-1, keepdim=True)
            if bool(torch.isinf(evidence).any()):
                raise ValueError("an item's observed tokens agree with no row: p(x_O) = 0, so its "
                                 "conditional marginals are undefined")
            pieces.append(joint - evidence)
        if pieces:
            return torch.cat(pieces)
        return torch.zeros((0, self.length) if marginals else 0, dtype=torch.float64)
