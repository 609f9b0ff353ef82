"""What a position still to be decided holds, for each kind of backbone noise
(:data:`~pcdiff.backbones.protocol.NOISE_KINDS`): the one rule that training's corruption
(:mod:`pcdiff.train.noise`) and the decoder's renoising (:mod:`pcdiff.decode.generate`) share.

* ``"mask"`` (absorbing noise): the mask id; nothing is drawn, so a masked model's random streams
  are what they were before uniform noise existed;
* ``"uniform"``: a token drawn uniformly from [0, V), independently per position (it may equal the
  clean token, as in uniform-noise diffusion: Austin et al., D3PM, arXiv 2107.03006; Schiff et al.,
  UDLM, arXiv 2412.10193). Which positions are noisy is kept beside the tokens as a boolean tensor.
"""
from __future__ import annotations

import torch

from .protocol import NOISE_KINDS

__all__ = ["noise_fill", "corrupt"]


def noise_fill(backbone, shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """[*shape] long on ``device``: the token each corrupted position holds under ``backbone``'s noise.
    ``"mask"``: the mask id everywhere (no draw); ``"uniform"``: i.i.d. uniform ids in [0, V), drawn
    from ``generator`` on its device (None: torch's global generator, on ``device``)."""
    kind = getattr(backbone, "noise", "mask")      # a backbone older than the noise field is masked
    if kind == "mask":
        return torch.full(tuple(shape), backbone.mask_id, dtype=torch.long, device=device)
    if kind != "uniform":
        raise ValueError(f"backbone.noise must be one of {NOISE_KINDS}, got {kind!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    fill = torch.randint(backbone.vocab_size, tuple(shape), generator=generator,
                         device=device if generator is None else generator.device)
    return fill.to(device) if device is not None else fill


def corrupt(x0: torch.Tensor, masked: torch.Tensor, backbone, generator: torch.Generator | None = None,
            fill: torch.Tensor | None = None) -> torch.Tensor:
    """x_t [B, L]: ``x0`` with the backbone's noise at the ``masked`` [B, L] positions (see
    :func:`noise_fill`); ``fill`` [B, L]: noise tokens drawn beforehand (e.g. for a whole batch that
    is then shared out, or a cache's fixed corruptions), read only at ``masked`` positions."""
    if fill is None:
        fill = noise_fill(backbone, x0.shape, generator, device=x0.device)
    return torch.where(masked, fill.to(x0.device), x0)
