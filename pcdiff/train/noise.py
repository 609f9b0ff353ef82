"""The forward corruption that every objective and measurement shares: which positions are masked,
and what the backbone sees of a corrupted batch.

* :func:`mask_noise`: the diffusion ELBO's noise: per sequence t ~ U(MIN_T, 1), each position
  masked independently with probability t (at least one per sequence);
* :func:`mask_exactly`: exactly ``count`` positions per row, chosen uniformly (evaluation at a fixed
  masked fraction).

Random numbers are drawn on the generator's device, so the same seed gives the same masks wherever
the model runs.
"""
from __future__ import annotations

import torch

__all__ = ["MIN_T", "mask_noise", "mask_exactly", "corrupt", "backbone_outputs"]

MIN_T = 1e-3  # caps the 1/t weight of the ELBO at 1000


def mask_noise(x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """t [B] ~ U(MIN_T, 1) and masked [B, L] (bool, on x0's device), each position masked with
    probability t; a row with nothing masked gets one random position masked instead."""
    batch, length = x0.shape
    t = torch.rand(batch, generator=generator, device=generator.device).clamp(MIN_T, 1.0)
    masked = torch.rand(batch, length, generator=generator, device=generator.device) < t[:, None]
    # a sequence with nothing masked would contribute no signal; mask one random position instead
    forced = torch.randint(length, (batch,), generator=generator, device=generator.device)
    empty = ~masked.any(dim=1)
    masked[empty, forced[empty]] = True
    return t.to(x0.device), masked.to(x0.device)


def mask_exactly(rows: int, length: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """[rows, length] bool, True at exactly ``count`` uniformly chosen positions of each row
    (``count`` is clamped to [1, length])."""
    count = max(1, min(length, count))
    chosen = torch.rand(rows, length, generator=generator).argsort(dim=1)[:, :count]
    return torch.zeros(rows, length, dtype=torch.bool).scatter_(1, chosen, True)


def corrupt(x0: torch.Tensor, masked: torch.Tensor, mask_id: int) -> torch.Tensor:
    """x_t: ``x0`` with the mask id at the masked positions."""
    return torch.where(masked, torch.full_like(x0, mask_id), x0)


def backbone_outputs(backbone, x0: torch.Tensor, masked: torch.Tensor, need_grad: bool = False, module=None):
    """(logits [B, L, V], hidden [B, L, D]) of ``backbone`` on x0 corrupted at ``masked``;
    ``module``: the backbone wrapped for DDP (called instead, for the gradient sync)."""
    with torch.set_grad_enabled(need_grad):
        out = (module or backbone)(corrupt(x0, masked, backbone.mask_id))
    return out.logits, out.hidden
