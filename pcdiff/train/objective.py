"""The CoDD layer's training objective and its held-out measurements.

The objective is the masked diffusion ELBO with p̂ in place of the factorized output: per sequence
t ~ U(0, 1), each position corrupted with probability t (at least one; the backbone's noise, the mask
id or uniform random tokens: :func:`pcdiff.train.noise.corrupt`), loss
−log p̂(x0's tokens at the corrupted positions | x_t) / t, summed over the batch and divided by its number of tokens
(the backbone's normalization, so the two losses are comparable). The factorized backbone's value
of the same objective is reported beside it.
"""
from __future__ import annotations

import torch

from ..backbones.protocol import Backbone
from ..codd.layer import CoDDLayer
from .distributed import World
from .noise import backbone_outputs, elbo_draw, mask_exactly, noise_fill

__all__ = ["check_compatible", "codd_objective", "heldout_objective", "evaluate_nll"]


def check_compatible(layer: CoDDLayer, backbone: Backbone, length: int | None = None) -> None:
    """Raise ValueError unless ``layer`` can sit on ``backbone`` (and tile sequences of ``length``)."""
    if layer.vocab_size != backbone.vocab_size:
        raise ValueError(f"vocabulary mismatch: the circuit has V = {layer.vocab_size}, the backbone "
                         f"V = {backbone.vocab_size}")
    if layer.mask_id is not None and layer.mask_id != backbone.mask_id:   # a uniform backbone's is None
        raise ValueError(f"the layer's mask_id {layer.mask_id} differs from the backbone's {backbone.mask_id}")
    if layer.needs_hidden and layer.hidden_size != backbone.hidden_size:
        raise ValueError(f"the adapter expects hidden size {layer.hidden_size}, "
                         f"the backbone has {backbone.hidden_size}")
    if length is not None and length % layer.block_length:
        raise ValueError(f"sequence length {length} is not a multiple of the layer's block length {layer.block_length}")


def codd_objective(layer, logits, hidden, x0, masked, t, tokens: int | None = None,
                   module=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(CoDD loss, factorized loss): Σ_b nll_b / t_b / tokens (default B · N); the factorized one (the
    backbone's softmax at the layer's temperature, as ``CoDDBlockDistribution.factorized``) without
    gradient. ``module``: the layer in DDP (its forward is the NLL)."""
    tokens = x0.numel() if tokens is None else tokens
    nll = (module or layer)(logits, hidden if layer.needs_hidden else None, x0, masked)   # [B]
    with torch.no_grad():
        logq = torch.log_softmax(logits.float() / layer.temperature, -1).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
        fact = -torch.where(masked, logq, torch.zeros_like(logq)).sum(-1)
    return (nll / t).sum() / tokens, (fact / t).sum() / tokens


@torch.no_grad()
def _objective_sums(layer, backbone, x0: torch.Tensor, noise, batch_size: int, world: World,
                    generator: torch.Generator) -> list[float]:
    """[Σ CoDD, Σ factorized] of nll_b / t_b over the rows of x0. Chunk by chunk, ``noise(chunk)`` draws
    (t, masked) and ``generator`` the backbone's noise tokens (none for masked noise) for the whole
    chunk on every rank (one process's stream); each rank scores its part of the chunk and the sums
    are reduced over the ranks."""
    was = backbone.training
    backbone.eval()
    sums = torch.zeros(2, dtype=torch.float64)
    for start in range(0, len(x0), batch_size):
        chunk = x0[start:start + batch_size]
        t, masked = noise(chunk)
        fill = noise_fill(backbone, masked.shape, generator)
        part = world.split(len(chunk))
        if part.stop > part.start:
            rows, masked, t, fill = (v[part].to(backbone.device) for v in (chunk, masked, t, fill))
            logits, hidden = backbone_outputs(backbone, rows, masked, fill=fill)
            sums += torch.stack(codd_objective(layer, logits, hidden, rows, masked, t, tokens=1)).double().cpu()
    backbone.train(was)
    return world.sum(sums).tolist()


def heldout_objective(layer: CoDDLayer, backbone: Backbone, x0: torch.Tensor, seed: int = 1234,
                      batch_size: int = 512, world: World | None = None, draw: str = "time") -> dict:
    """The training objective on ``x0`` with fixed noise: {"codd": ..., "factorized": ...} (nats per token).
    ``draw``: the ELBO's noise draw (:func:`pcdiff.train.noise.elbo_draw`; both bound the same NLL, the
    count draw more tightly). With a ``world`` of several ranks, all call it and all get the single-process value."""
    generator = torch.Generator().manual_seed(seed)
    codd, fact = _objective_sums(layer, backbone, x0, lambda chunk: elbo_draw(chunk, generator, draw), batch_size,
                                 world or World(), generator)
    return {"codd": codd / max(x0.numel(), 1), "factorized": fact / max(x0.numel(), 1)}


def evaluate_nll(layer: CoDDLayer, backbone: Backbone, data_tensor: torch.Tensor, masked_fraction: float,
                 seed: int = 0, batch_size: int = 512) -> dict:
    """Per-masked-token NLL (nats) of CoDD and of the factorized backbone when exactly
    max(1, round(f · N)) positions of each row, chosen uniformly (seeded), are masked."""
    if not 0.0 < masked_fraction <= 1.0:
        raise ValueError(f"masked_fraction must be in (0, 1], got {masked_fraction}")
    if data_tensor.dim() != 2 or len(data_tensor) == 0:
        raise ValueError(f"data_tensor must be a non-empty [N, L] tensor, got {tuple(data_tensor.shape)}")
    check_compatible(layer, backbone, data_tensor.shape[1])
    generator = torch.Generator().manual_seed(seed)
    n, length = data_tensor.shape
    count = max(1, round(masked_fraction * length))

    def noise(chunk):                                          # t = 1: plain NLL of the masked tokens
        return torch.ones(len(chunk)), mask_exactly(len(chunk), length, count, generator)

    codd, fact = _objective_sums(layer, backbone, data_tensor, noise, batch_size, World(), generator)
    tokens = n * count
    return {"codd": codd / tokens, "factorized": fact / tokens, "masked_fraction": masked_fraction,
            "masked_per_row": count, "num_masked_tokens": tokens}
