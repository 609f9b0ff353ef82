"""The forward corruption that every objective and measurement shares: which positions are
corrupted, and what the backbone sees of a corrupted batch, whatever the backbone's noise.

* :func:`mask_noise`: the diffusion ELBO's schedule: per sequence t ~ U(MIN_T, 1), each position
  corrupted independently with probability t (at least one per sequence);
* :func:`mask_exactly`: exactly ``count`` positions per row, chosen uniformly (evaluation at a fixed
  corrupted fraction);
* :func:`corrupt` (from :mod:`pcdiff.backbones.noise`, shared with the decoder): x0 with the chosen
  positions replaced by the backbone's noise: the mask id for ``"mask"`` (no draw), a token drawn
  uniformly from [0, V) for ``"uniform"``. Which positions were corrupted is kept as a boolean
  tensor beside x_t: for uniform noise no token says so. :func:`backbone_outputs` runs the backbone
  on it.

Random numbers are drawn on the generator's device, so the same seed gives the same corruption
wherever the model runs. Masked noise draws nothing in :func:`corrupt`, so a masked run's random
streams are what they were before uniform noise existed.
"""
from __future__ import annotations

import torch

from ..backbones.noise import corrupt, noise_fill

__all__ = ["MIN_T", "mask_noise", "mask_exactly", "noise_fill", "corrupt", "backbone_outputs"]

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


def backbone_outputs(backbone, x0: torch.Tensor, masked: torch.Tensor, need_grad: bool = False, module=None,
                     generator: torch.Generator | None = None, fill: torch.Tensor | None = None):
    """(logits [B, L, V], hidden [B, L, D]) of ``backbone`` on x0 corrupted at ``masked`` (by
    :func:`corrupt`, with ``generator`` or ``fill``); ``module``: the backbone wrapped for DDP (called
    instead, for the gradient sync)."""
    noisy = corrupt(x0, masked, backbone, generator, fill)
    with torch.set_grad_enabled(need_grad):
        out = (module or backbone)(noisy)
    return out.logits, out.hidden
