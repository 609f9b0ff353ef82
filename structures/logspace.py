"""Log-space primitives shared by the whole core: a logarithm safe at zero, a max-shift that is
safe for rows of -inf, and the one categorical draw every sampler in the project uses.

Zero probabilities are legal everywhere in a circuit (impossible evidence, structural zeros), so
``log 0 = -inf`` must neither poison a gradient with ``inf · 0 = NaN`` nor turn a shift into NaN.
"""
from __future__ import annotations

import torch

__all__ = ["guarded_log", "stable_shift", "gumbel_noise", "gumbel_argmax"]


class _GuardedLog(torch.autograd.Function):
    """``log(s)`` for ``s ≥ 0`` whose gradient is 0 where ``s == 0`` (the value there is -inf)."""

    @staticmethod
    def forward(ctx, s: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(s)
        return torch.log(s)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (s,) = ctx.saved_tensors
        return torch.where(s > 0, grad / s, 0.0)          # grad / 0 is discarded, never propagated


def guarded_log(s: torch.Tensor) -> torch.Tensor:
    """``log(s)`` for ``s ≥ 0``, with gradient 0 (not NaN) where ``s == 0``."""
    if torch.is_grad_enabled() and s.requires_grad:
        return _GuardedLog.apply(s)
    return torch.log(s)


def stable_shift(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The max along ``dim`` (kept), detached; all -inf rows get the most negative finite shift.

    ``y = log Σ exp(x - m) + m`` does not depend on ``m``, so detaching it leaves gradients exact.
    """
    return x.detach().amax(dim=dim, keepdim=True).clamp_min(torch.finfo(x.dtype).min)


def gumbel_noise(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise shaped, typed and placed like ``like``: ``-log(-log U)`` with U kept
    inside [tiny, 1 - eps], so the noise stays finite and a -inf logit can never win. (``Exp(1)``
    noise would need fewer ops, but torch draws it 3-4x slower on CPU.)"""
    noise = torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    noise.clamp_(min=torch.finfo(like.dtype).tiny, max=1.0 - torch.finfo(like.dtype).eps)
    return noise.log_().neg_().log_().neg_()                           # in place: one allocation


def gumbel_argmax(logits: torch.Tensor, generator: torch.Generator | None = None,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
    """One exact draw from ``softmax(logits)`` along the last dim (the Gumbel-max trick): ``[...]``.

    ``logits`` need not be normalized; -inf entries are never drawn while another entry is finite.
    Every categorical draw in the project goes through here, so the same generator state gives the
    same token on every path that makes the same draw. ``noise``: :func:`gumbel_noise` drawn ahead
    (a draw made position by position, each distribution known only after the previous token, uses
    the noise the one-shot draw of the whole block would have used).
    """
    return torch.argmax(logits + (gumbel_noise(logits, generator) if noise is None else noise), dim=-1)
