"""A finite table of rows with weights, read as a distribution whose marginals are exact by enumeration.

The in-distribution items of the demo's controls are drawn from exactly such a distribution (the
training items, by frequency where the data is weighted), so scoring them under it gives the true
conditional entropy those items are drawn with: the floor no model of that distribution can beat. It
answers the queries of a compiled circuit, ``log_prob(x, observed)`` and ``marginals(x, observed)``,
so the scoring rules of :mod:`pcdiff.app.scoring` serve both.
"""
from __future__ import annotations

import torch

__all__ = ["EmpiricalDistribution"]

# comparisons per chunk (items × rows × positions): bounds the [chunk, M, L] bool tensor at ~32 MB
_CHUNK_ELEMENTS = 1 << 25


class EmpiricalDistribution:
    """p(x) = Σ_j w_j [row_j = x] / Σ_j w_j over the rows ``[M, L]`` of a table (repeats add up).

    Args:
        rows: LongTensor ``[M, L]``, M ≥ 1, token ids in ``[0, vocab_size)``.
        weights: ``[M]`` finite, ≥ 0, not all zero; ``None`` for uniform.
        vocab_size: V, the last axis of :meth:`marginals` (default: the largest id + 1).
    """

    def __init__(self, rows: torch.Tensor, weights: torch.Tensor | None = None, vocab_size: int | None = None):
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
        largest = int(rows.max())
        vocab_size = largest + 1 if vocab_size is None else vocab_size
        if int(rows.min()) < 0 or largest >= vocab_size:
            raise ValueError(f"rows must hold token ids in [0, vocab_size={vocab_size}), got [{int(rows.min())}, "
                             f"{largest}]")
        self.rows, self.vocab_size = rows.long().cpu(), vocab_size
        self.log_weights = (weights / weights.sum()).log()

    @property
    def length(self) -> int:
        return self.rows.shape[1]

    def log_prob(self, x: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
        """``[N]`` float64: log p(x), or the exact marginal log p(x_O) summing out the positions where
        ``observed`` ``[N, L]`` is False; −inf where no row agrees."""
        return torch.cat([log_mass.logsumexp(-1) for log_mass in self._agreeing(x, observed)]
                         or [torch.zeros(0, dtype=torch.float64)])

    def marginals(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """``[N, L, V]`` float64: P(x_i = v | x_O) at every position, exact (one-hot at observed
        positions). Raises where no row agrees with an item's observed tokens (p(x_O) = 0)."""
        pieces = []
        for log_mass in self._agreeing(x, observed):
            evidence = log_mass.logsumexp(-1, keepdim=True)
            if bool(torch.isinf(evidence).any()):
                raise ValueError("an item's observed tokens agree with no row: p(x_O) = 0, so its "
                                 "conditional marginals are undefined")
            mass = (log_mass - evidence).exp()                                                 # [n, M]
            out = torch.zeros(len(mass), self.length, self.vocab_size, dtype=torch.float64)
            for i in range(self.length):
                out[:, i].scatter_add_(1, self.rows[:, i].expand_as(mass), mass)
            pieces.append(out)
        return torch.cat(pieces) if pieces else torch.zeros(0, self.length, self.vocab_size, dtype=torch.float64)

    def _agreeing(self, x: torch.Tensor, observed: torch.Tensor | None):
        """Per chunk of items: ``[n, M]``, each table row's log-weight where it agrees with the item on
        the observed positions, −inf elsewhere."""
        if x.dim() != 2 or x.shape[1] != self.length:
            raise ValueError(f"x must have shape [N, {self.length}], got {list(x.shape)}")
        if observed is not None and observed.shape != x.shape:
            raise ValueError(f"observed must have the shape of x {list(x.shape)}, got {list(observed.shape)}")
        x = x.long().cpu()
        ignored = torch.zeros_like(x, dtype=torch.bool) if observed is None else ~observed.bool().cpu()
        chunk = max(1, _CHUNK_ELEMENTS // self.rows.numel())
        for start in range(0, len(x), chunk):
            part = slice(start, start + chunk)
            agrees = ((self.rows.unsqueeze(0) == x[part].unsqueeze(1)) | ignored[part].unsqueeze(1)).all(-1)
            yield torch.where(agrees, self.log_weights, -torch.inf)
