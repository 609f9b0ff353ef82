"""The forward corruption that every objective and measurement shares: which positions are
corrupted, and what the backbone sees of a corrupted batch, whatever the backbone's noise.

* :func:`mask_noise`: the diffusion ELBO's schedule: per sequence t ~ U(MIN_T, 1), each position
  corrupted independently with probability t (at least one per sequence); the ELBO weighs a
  sequence by 1/t;
* :func:`mask_count_noise`: the same ELBO drawn with less variance: per sequence a count k ~ U{1..L}
  and exactly k positions corrupted, t = k/L (weight L/k; see its docstring); :func:`elbo_draw` picks;
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

__all__ = ["MIN_T", "ELBO_DRAWS", "mask_noise", "mask_count_noise", "elbo_draw", "check_draw",
           "mask_exactly", "noise_fill", "corrupt", "backbone_outputs"]

MIN_T = 1e-3  # caps the 1/t weight of the ELBO at 1000

#: How a training step draws the masked diffusion ELBO's noise: "time" (:func:`mask_noise`) or "count"
#: (:func:`mask_count_noise`).
ELBO_DRAWS = ("time", "count")


def mask_noise(x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """t [B] ~ U(MIN_T, 1) and masked [B, L] (bool, on x0's device), each position masked with
    probability t; a row with nothing masked gets one random position masked instead.

    That forced position keeps every row informative but is not free: weighed 1/t at small t, it adds
    ∫_{MIN_T}^1 (1 - t)^L / t dt (4.7 at L = 13) times the one-position cross-entropy to the 1/t-weighted
    loss, whose one-position rows then weigh 5.7 times their share in the ELBO. The loss stays an upper
    bound on the NLL (the added terms are cross-entropies), a looser one; tests/pcdiff/test_elbo_draws.py
    computes both expectations exactly. :func:`mask_count_noise` draws the ELBO itself."""
    batch, length = x0.shape
    t = torch.rand(batch, generator=generator, device=generator.device).clamp(MIN_T, 1.0)
    masked = torch.rand(batch, length, generator=generator, device=generator.device) < t[:, None]
    # a sequence with nothing masked would contribute no signal; mask one random position instead
    forced = torch.randint(length, (batch,), generator=generator, device=generator.device)
    empty = ~masked.any(dim=1)
    masked[empty, forced[empty]] = True
    return t.to(x0.device), masked.to(x0.device)


def mask_count_noise(x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """t [B] = k / L and masked [B, L] (bool, on x0's device): per row a count k ~ U{1..L}, then exactly
    k positions chosen uniformly; t, the fraction masked, plays :func:`mask_noise`'s t in the 1/t weight.

    The same ELBO as :func:`mask_noise`'s draw, with the time integrated out: under the linear schedule
    a set of k masked positions has density t^k (1 - t)^(L - k), and C(L, k) ∫_0^1 t^(k-1) (1 - t)^(L-k) dt
    = 1/k, so E_t[(1/t) Σ_masked CE] = Σ_k (1/k) E_{|S|=k}[Σ_S CE] = E_{k ~ U{1..L}}[(L/k) Σ_S CE]: the
    any-order autoregressive bound (Uria et al., arXiv 1310.1757; Hoogeboom et al., arXiv 2110.02037;
    Ou et al., arXiv 2406.03736). Its weight is at most L where the time draw's reaches 1/MIN_T: with a
    dozen positions most batches of 128 hold a row drawn at t < 0.01, whose gradient, weighed a
    hundredfold, outweighs the rest of the batch, and gradient clipping then shrinks everyone's step.
    Same bound (without the forced position's extra term), far less variance; docs/results.md measures
    what it does to training."""
    batch, length = x0.shape
    count = torch.randint(1, length + 1, (batch,), generator=generator, device=generator.device)
    order = torch.rand(batch, length, generator=generator, device=generator.device).argsort(dim=1)
    first = torch.arange(length, device=generator.device) < count[:, None]   # [B, L]: the first k of each order
    masked = torch.zeros_like(first).scatter_(1, order, first)               # exactly k: a random k-subset
    return (count / length).to(x0.device), masked.to(x0.device)


def check_draw(draw, name: str = "draw") -> None:
    """Raise ValueError naming ``name`` unless ``draw`` is one of :data:`ELBO_DRAWS`."""
    if draw not in ELBO_DRAWS:
        raise ValueError(f"{name} must be one of {ELBO_DRAWS}, got {draw!r}")


def elbo_draw(x0: torch.Tensor, generator: torch.Generator, draw: str = "time") -> tuple[torch.Tensor, torch.Tensor]:
    """(t [B], masked [B, L]) of one draw of the masked diffusion ELBO's noise, each row weighed 1/t:
    ``draw`` "time" is :func:`mask_noise`, "count" :func:`mask_count_noise`."""
    check_draw(draw)
    return (mask_count_noise if draw == "count" else mask_noise)(x0, generator)


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
