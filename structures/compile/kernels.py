"""Numerical kernels of the compiled circuit, all in log space.

A sum layer is ``y[k] = log Σ_c W[k, c] · exp(x[c])``. We evaluate it as a matrix product on
max-shifted exponentials (``exp(x - max x) @ Wᵀ``, then ``log`` and add the max back), which is
as exact as a log-sum-exp but runs as a GEMM; the few outputs whose shifted sum underflows (the
max input has weight zero) are recomputed by log-sum-exp. Zero probabilities are legal everywhere
(impossible evidence, structural zeros), so the logarithm is :func:`~structures.logspace.guarded_log`.
"""
from __future__ import annotations

import math

import torch

from ..logspace import guarded_log, stable_shift


class WeightTable:
    """A sum (or emission) table in the forms the kernels need, each computed once per pass and
    only when asked for.

    ``log`` and ``probs`` are [..., K, C]. ``may_underflow`` is False when every weight is at least
    the dtype's smallest normal number: the shifted sum is then at least the weight of the largest
    input, so no output can underflow and the exact repair pass is skipped.
    """

    def __init__(self, log_weights: torch.Tensor, probs: torch.Tensor | None = None,
                 may_underflow: bool | None = None):
        self.log = log_weights
        self._probs = probs
        self._may_underflow = may_underflow
        self._probs_t: torch.Tensor | None = None
        self._log_t: torch.Tensor | None = None

    @property
    def probs(self) -> torch.Tensor:
        if self._probs is None:
            self._probs = self.log.exp()
        return self._probs

    @property
    def probs_t(self) -> torch.Tensor:
        """``probs`` with its last two dims swapped, contiguous: a GEMM against it runs without a
        transposed operand (measurably faster on CPU BLAS), and it is built once per pass."""
        if self._probs_t is None:
            self._probs_t = self.probs.transpose(-1, -2).contiguous()
        return self._probs_t

    @property
    def log_t(self) -> torch.Tensor:
        """``log`` with its last two dims swapped, contiguous: observed tokens gather its rows (and
        scatter back into them in backward) faster than strided columns; built once per pass."""
        if self._log_t is None:
            self._log_t = self.log.transpose(-1, -2).contiguous()
        return self._log_t

    @property
    def may_underflow(self) -> bool:
        if self._may_underflow is None:
            # From the log table (no [K, V] exponential where only log values are needed), with a
            # margin of one nat so that rounding in exp can never take a weight below ``tiny``.
            floor = math.log(torch.finfo(self.log.dtype).tiny) + 1.0
            self._may_underflow = bool(self.log.detach().amin() < floor)
        return self._may_underflow

    @classmethod
    def stack(cls, tables: list["WeightTable"], dim: int = 0) -> "WeightTable":
        return cls(torch.stack([t.log for t in tables], dim), torch.stack([t.probs for t in tables], dim),
                   any(t.may_underflow for t in tables))


def log_matmul_exp(x: torch.Tensor, table: WeightTable, shared: bool,
                   finite_inputs: bool | None = False) -> torch.Tensor:
    """``y[b, g, k] = log Σ_c exp(log_weights[g, k, c] + x[b, g, c])``.

    x: [B, G, C] log-values. table: [G, K, C], or per sample [B, G, K, C]; with ``shared`` a
    single table [K, C] (or per sample [B, K, C]) serves every group (tied parameters: one large
    GEMM). Returns [B, G, K]. With ``shared`` and a [K, C] table, x may also be [B, C] (→ [B, K]).

    ``finite_inputs`` True promises that no row of x is all -inf: the shift needs no clamp. With
    every weight at least the smallest normal number too, each shifted sum is then at least the
    weight of its row's largest input, never 0, so the plain ``log`` (a native op, several times
    cheaper in backward than the guarded one) is exact. None: find out from the row maxima (one
    small reduction; worth it for one large GEMM, not for every layer of a chain).
    """
    if x.dim() == 2 and table.may_underflow:
        return log_matmul_exp(x.unsqueeze(1), table, shared).squeeze(1)      # the repair indexes [B, G, K]
    if finite_inputs is None:
        m = x.detach().amax(dim=-1, keepdim=True)
        finite_inputs = m.amin().item() > -math.inf
        if not finite_inputs:
            m = m.clamp_min(torch.finfo(x.dtype).min)
    else:
        m = x.detach().amax(dim=-1, keepdim=True) if finite_inputs else stable_shift(x)
    p = (x - m).exp_()                           # in place on a temporary: one allocation fewer
    weights = table.probs
    if shared:
        # A table that will get a gradient enters as a transposed view: mm's backward then returns
        # that gradient in the table's own layout, where the contiguous copy (a little faster
        # forward, and free at inference where it is cached) would need a strided transpose of it.
        weights_t = table.probs.transpose(-1, -2) if table.probs.requires_grad else table.probs_t
        s = torch.matmul(p, weights_t)                                 # [B, G, C] @ [(B,) C, K]
    elif weights.dim() == 3:
        s = torch.einsum("bgc,gkc->bgk", p, weights)
    else:
        s = torch.einsum("bgc,bgkc->bgk", p, weights)
    if not table.may_underflow:
        if not torch.is_grad_enabled():
            return s.log_().add_(m)              # nothing is saved for a backward: reuse the GEMM's output
        return (torch.log(s) if finite_inputs else guarded_log(s)).add_(m)
    y = guarded_log(s) + m
    return _repair_underflow(y, s, x, table.log, shared)


def _repair_underflow(y: torch.Tensor, s: torch.Tensor, x: torch.Tensor, log_weights: torch.Tensor,
                      shared: bool) -> torch.Tensor:
    """Recompute by log-sum-exp the outputs whose shifted sum ``s`` underflowed.

    The shift is the max over the *inputs*, but a node may give that input weight zero (a
    structural zero, or a token outside a variable's vocabulary): with inputs thousands of nats
    apart every term it does weight underflows and the GEMM returns log 0 for a finite value.
    Such entries are rare, so they are redone exactly, one row of C terms each.
    """
    flagged = s.detach() < torch.finfo(s.dtype).tiny                   # zero or subnormal: no precision left
    if not bool(flagged.any()):
        return y
    b, g, k = flagged.nonzero(as_tuple=True)                           # [A] each
    if shared:
        lw = log_weights[k] if log_weights.dim() == 2 else log_weights[b, k]
    else:
        lw = log_weights[g, k] if log_weights.dim() == 3 else log_weights[b, g, k]
    terms = x[b, g] + lw                                               # [A, C]
    # Rows of all -inf are true zeros (y is already -inf there); logsumexp's gradient would be NaN.
    possible = torch.isfinite(terms.detach()).any(-1)
    if not bool(possible.any()):
        return y
    b, g, k, terms = b[possible], g[possible], k[possible], terms[possible]
    return y.index_put((b, g, k), torch.logsumexp(terms, dim=-1))


def log_max_product(x: torch.Tensor, log_weights: torch.Tensor, max_elements: int = 1 << 24) -> torch.Tensor:
    """Max-product analogue of :func:`log_matmul_exp`: ``max_c (log_weights[g, k, c] + x[b, g, c])``.

    log_weights: [G, K, C] (G may be 1 to broadcast one table) or per sample [B, G, K, C]. Runs
    in chunks of the batch so that the [b, G, K, C] intermediate stays under ``max_elements``.
    """
    B, G, C = x.shape
    K = log_weights.shape[-2]
    chunk = max(1, max_elements // max(1, G * K * C))
    outs = []
    for start in range(0, B, chunk):
        xs = x[start:start + chunk]                                     # [b, G, C]
        lw = log_weights if log_weights.dim() == 3 else log_weights[start:start + chunk]
        outs.append((xs.unsqueeze(-2) + lw).amax(-1))                   # [b, G, K]
    return torch.cat(outs, dim=0)
