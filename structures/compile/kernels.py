"""Numerical kernels of the compiled circuit, all in log space.

A sum layer is ``y[k] = log Σ_c W[k, c] · exp(x[c])``. We evaluate it as a matrix product on
max-shifted exponentials (``exp(x - max x) @ Wᵀ``, then ``log`` and add the max back), which is
as exact as a log-sum-exp but runs as a GEMM; the few outputs whose shifted sum underflows (the
max input has weight zero) are recomputed by log-sum-exp. Zero probabilities are legal everywhere
(impossible evidence, structural zeros), so the logarithm is a guarded one whose gradient at 0 is
0 rather than ``inf · 0 = NaN``.
"""
from __future__ import annotations

import torch


class _GuardedLog(torch.autograd.Function):
    """``log(s)`` for ``s ≥ 0`` whose gradient is 0 where ``s == 0`` (the value there is -inf)."""

    @staticmethod
    def forward(ctx, s: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(s)
        return torch.log(s)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (s,) = ctx.saved_tensors
        positive = s > 0
        return torch.where(positive, grad / torch.where(positive, s, torch.ones_like(s)), torch.zeros_like(s))


def guarded_log(s: torch.Tensor) -> torch.Tensor:
    return _GuardedLog.apply(s)


def stable_shift(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The max along ``dim`` (kept), detached, with -inf rows shifted by 0 instead.

    ``y = log Σ exp(x - m) + m`` does not depend on ``m``, so detaching it leaves gradients exact.
    """
    m = x.detach().amax(dim=dim, keepdim=True)
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def log_matmul_exp(x: torch.Tensor, log_weights: torch.Tensor, shared: bool) -> torch.Tensor:
    """``y[b, g, k] = log Σ_c exp(log_weights[g, k, c] + x[b, g, c])``.

    x: [B, G, C] log-values. log_weights: log-probabilities, [G, K, C], or per sample
    [B, G, K, C]; with ``shared`` a single table [K, C] (or per sample [B, K, C]) serves every
    group (tied parameters: one large GEMM). Returns [B, G, K].
    """
    m = stable_shift(x)
    p = torch.exp(x - m)
    weights = log_weights.exp()
    if shared:
        s = torch.matmul(p, weights.transpose(-1, -2))                 # [B, G, C] @ [(B,) C, K]
    elif weights.dim() == 3:
        s = torch.einsum("bgc,gkc->bgk", p, weights)
    else:
        s = torch.einsum("bgc,bgkc->bgk", p, weights)
    return _repair_underflow(guarded_log(s) + m, s, x, log_weights, shared)


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


def gumbel_argmax(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One exact draw from ``softmax(logits)`` along the last dim (Gumbel-max trick)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    tiny = torch.finfo(logits.dtype).tiny
    gumbel = -torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - torch.finfo(logits.dtype).eps)))
    return torch.argmax(logits + gumbel, dim=-1)
