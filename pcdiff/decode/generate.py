"""Semi-autoregressive diffusion decoding (LLaDA-style), with or without the CoDD layer: the loop.

:func:`denoise` fills every mask id of a sequence block by block, left to right. Within a block
every step calls the backbone once on the whole sequence, proposes a token for each still-masked
position of the block, and commits the positions a remasking rule ranks highest
(:class:`~pcdiff.decode.step.BlockDecoder`); the others stay masked for a later step. A committed
position never changes again. How many positions a step commits follows LLaDA's schedule: each
row's masked positions in the block divided as evenly as possible over the block's steps, earlier
steps taking the remainder. :func:`generate` is :func:`denoise` of a prompt followed by masks;
infilling is :func:`denoise` of items with masks where they are unknown.
"""
from __future__ import annotations

import torch

from ..arguments import is_int
from .schedule import per_row_counts, split_evenly
from .step import BlockDecoder

__all__ = ["generate", "denoise"]


@torch.no_grad()
def generate(backbone, prompt: torch.Tensor | None = None, *, layer=None, gen_length: int, block_length: int,
             steps: int, remasking: str = "low_confidence", temperature: float = 1.0,
             threshold: float | None = None, codd: str = "off", pc_frac: float | None = None,
             generator: torch.Generator | None = None, batch_size: int | None = None) -> torch.Tensor:
    """Decode ``gen_length`` tokens after ``prompt`` [B, P] -> tokens [B, P + gen_length].

    backbone      a :class:`~pcdiff.backbones.Backbone` (``vocab_size``, ``mask_id``; tokens -> logits, hidden)
    layer         the CoDD layer (``block_length``, ``distribution(...)``); needed when ``codd != "off"``
    gen_length    a multiple of ``block_length``; blocks are decoded left to right
    steps         backbone calls in all, 1..gen_length, split as evenly as possible over the blocks
    remasking     which masked positions a step commits: "low_confidence", "margin", "entropy", "random"
    temperature   divides the logits (the layer's too, overriding its own); 0 = greedy: argmax, or
                  the MAP completion of the layer's p̂ at the layer's own temperature
    threshold     also commit every masked position whose confidence exceeds it (Fast-dLLM); a
                  block then ends as soon as it is decoded, so ``steps`` becomes an upper bound
    codd          "off" (factorized), "joint" or "any_order"; see :mod:`pcdiff.decode.step`
    pc_frac       use the circuit only while the block's masked fraction is below it
    generator     a torch.Generator (on the backbone's device) for reproducible runs
    batch_size    rows to generate when ``prompt`` is None (default 1)
    """
    x, prompt_length = _start(backbone, prompt, batch_size, gen_length)
    return denoise(backbone, x, layer=layer, start=prompt_length, block_length=block_length, steps=steps,
                   remasking=remasking, temperature=temperature, threshold=threshold, codd=codd, pc_frac=pc_frac,
                   generator=generator)


@torch.no_grad()
def denoise(backbone, x: torch.Tensor, *, layer=None, start: int = 0, block_length: int, steps: int,
            remasking: str = "low_confidence", temperature: float = 1.0, threshold: float | None = None,
            codd: str = "off", pc_frac: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill every mask id of ``x[:, start:]`` [B, N] (a multiple of ``block_length`` long), block by
    block, with at most ``steps`` backbone calls split evenly over the blocks; returns a new tensor.
    The other arguments are :func:`generate`'s. A block without masks costs no call."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype != torch.long or x.shape[0] < 1:
        raise ValueError(f"x must be a [batch, length] torch.long tensor, got {getattr(x, 'dtype', type(x))} "
                         f"of shape {tuple(getattr(x, 'shape', ()))}")
    if not is_int(start) or not 0 <= start < x.shape[1]:
        raise ValueError(f"start must be an int in [0, {x.shape[1]}) (x's length), got {start!r}")
    span = x.shape[1] - start
    _check(backbone, layer, gen_length=span, block_length=block_length, steps=steps, codd=codd)
    decoder = BlockDecoder(layer, mask_id=backbone.mask_id, remasking=remasking, temperature=temperature,
                           threshold=threshold, codd=codd, pc_frac=pc_frac, generator=generator)
    x = x.clone()
    for block, block_steps in enumerate(split_evenly(steps, span // block_length)):
        lo = start + block * block_length
        hi = lo + block_length
        for count in per_row_counts(x[:, lo:hi] == backbone.mask_id, block_steps):
            masked = x[:, lo:hi] == backbone.mask_id                             # [B, L]
            if not masked.any():                                                 # done early (a threshold, few masks)
                break
            out = backbone(x)
            x[:, lo:hi] = decoder.step(out.logits[:, lo:hi], out.hidden[:, lo:hi], x[:, lo:hi], masked, count)
    return x


def _start(backbone, prompt, batch_size, gen_length) -> tuple[torch.Tensor, int]:
    """The initial sequence: the prompt followed by ``gen_length`` mask ids."""
    if not is_int(gen_length) or gen_length < 1:
        raise ValueError(f"gen_length must be a positive int, got {gen_length!r}")
    if prompt is None:
        rows = 1 if batch_size is None else batch_size
        if not is_int(rows) or rows < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        prompt = torch.empty((rows, 0), dtype=torch.long, device=_device(backbone))
    if not isinstance(prompt, torch.Tensor) or prompt.dtype != torch.long or prompt.dim() != 2:
        raise ValueError("prompt must be a [batch, length] torch.long tensor, got "
                         + (f"{prompt.dtype} of shape {tuple(prompt.shape)}" if isinstance(prompt, torch.Tensor)
                            else type(prompt).__name__))
    if batch_size is not None and batch_size != prompt.shape[0]:
        raise ValueError(f"batch_size ({batch_size}) disagrees with the prompt's batch ({prompt.shape[0]})")
    if prompt.shape[0] < 1:
        raise ValueError("prompt must have at least one row")
    bad = (prompt < 0) | (prompt >= backbone.vocab_size)
    if bad.any():
        b, i = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"prompt[{b}, {i}] = {int(prompt[b, i])} is not a token id in [0, {backbone.vocab_size})")
    masks = torch.full((prompt.shape[0], gen_length), backbone.mask_id, dtype=torch.long, device=prompt.device)
    return torch.cat([prompt, masks], dim=1), prompt.shape[1]


def _check(backbone, layer, *, gen_length, block_length, steps, codd) -> None:
    """The loop's own arguments and the layer's fit to the backbone (the step's knobs are
    :class:`BlockDecoder`'s to check)."""
    if not is_int(block_length) or block_length < 1:
        raise ValueError(f"block_length must be a positive int, got {block_length!r}")
    if gen_length % block_length:
        raise ValueError(f"gen_length ({gen_length}) must be a multiple of block_length ({block_length})")
    if not is_int(steps) or not 1 <= steps <= gen_length:
        raise ValueError(f"steps must be an int in [1, gen_length={gen_length}], got {steps!r}")
    if codd == "off" or layer is None:
        return
    if layer.block_length != block_length:
        raise ValueError(f"the layer covers blocks of {layer.block_length} positions, "
                         f"but block_length is {block_length}")
    layer_mask = getattr(layer, "mask_id", None)
    if layer_mask is not None and layer_mask != backbone.mask_id:
        raise ValueError(f"the layer's mask id ({layer_mask}) differs from the backbone's ({backbone.mask_id})")
    layer_vocab = getattr(layer, "vocab_size", backbone.vocab_size)
    if layer_vocab != backbone.vocab_size:
        raise ValueError(f"the layer's vocabulary ({layer_vocab}) differs from the backbone's ({backbone.vocab_size})")


def _device(module) -> torch.device:
    try:
        return next(module.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")
