"""Remasking of decoded tokens (ReMDM: Wang et al., "Remasking Discrete Diffusion Models with
Inference-Time Scaling", arXiv 2503.00307), the constant ("cap"-style) schedule σ.

What the decoder does with ``remask=σ``: at every step of a block except its last, each position
of the block that was committed at an earlier step of this block is masked again with probability
σ, independently, before the step's backbone call; the call then sees those positions masked, they
are proposed again from its logits like every other masked position, and the step commits its
scheduled count plus the number re-masked (per row), so the block still ends fully decoded within
its steps. Prompt tokens, earlier blocks and positions given to :func:`~pcdiff.decode.denoise`
(unmasked when the block starts) are never re-masked. σ = 0 makes no draw at all, so decoding is
exactly the decoding without remasking.

How it differs from the paper: ReMDM re-masks with a time-dependent σ_t ("cap": min(η, σ_max(t)),
of which this is the constant case η = σ where σ_max(t) does not bind; "rescale"; "conf") over the
whole sequence, and unmasks each masked position independently with the posterior's probability,
so the number decoded per step is random and the positions uniform; here σ is one constant, only
the current block of the semi-autoregressive loop is touched, the last step never re-masks (instead
of σ_max(t) reaching 0), the count per step is the schedule's plus the re-masked ones, and which
positions are committed follows the remasking rule (confidence, margin, entropy or random). There is
no "loop" phase (extra steps at a fixed noise level).
"""
from __future__ import annotations

import torch

from ..codd.rules import draw

__all__ = ["remask_positions", "remask_tokens"]


def remask_positions(eligible: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, L] bool: each ``eligible`` [B, L] position chosen again (to be decided anew) with
    probability ``sigma``. A coin per position of the block, drawn with
    :func:`~pcdiff.codd.rules.draw` (the project's one draw), eligible or not. The decoder then puts
    the backbone's noise there (the mask id, or a uniformly random token)."""
    coin = torch.tensor([1.0 - sigma, sigma], dtype=torch.float64, device=eligible.device)  # [keep, mask again]
    return (draw(coin.expand(*eligible.shape, 2), generator=generator) == 1) & eligible      # [B, L]


def remask_tokens(tokens: torch.Tensor, eligible: torch.Tensor, sigma: float, mask_id: int,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`remask_positions` for a masked model: (tokens [B, L] with the mask id at the re-masked
    positions, those positions [B, L] bool)."""
    again = remask_positions(eligible, sigma, generator)
    return tokens.masked_fill(again, mask_id), again
