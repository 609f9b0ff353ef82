"""Semi-autoregressive diffusion decoding (LLaDA-style), with or without the CoDD layer: the loop.

The state is (tokens, to_decide): the sequence and a boolean tensor of the positions still to be
decided. Before every backbone call the positions still to decide get the backbone's own noise
(:func:`pcdiff.backbones.noise.corrupt`): the mask id for a masked model (LLaDA, Dream, MDLM: no
draw, so nothing changes from one call to the next), fresh uniformly random tokens for a
uniform-noise model (drawn from ``generator``, at every undecided position of the sequence: x_t as
the model was trained on it); decided positions are clamped. For a masked model ``to_decide``
defaults to ``x == mask_id``.

:func:`denoise` decides every such position of a sequence block by block, left to right. Within a
block every step calls the backbone once on the whole sequence, proposes a token for each
position of the block still to decide, and commits the positions a remasking rule ranks highest
(:class:`~pcdiff.decode.step.BlockDecoder`); the others stay to decide for a later step. A committed
position never changes again. How many positions a step commits follows LLaDA's schedule: each
row's masked positions in the block divided as evenly as possible over the block's steps, earlier
steps taking the remainder. :func:`generate` is :func:`denoise` of a prompt followed by positions to
decide; infilling is :func:`denoise` of items with masks (or ``to_decide``) where they are unknown.

The parallel decoders people reach for are knobs of the same loop: a confidence ``threshold``
(Fast-dLLM) or an ``entropy_bound`` (EB-sampler) raises a step's count; ``remask`` (ReMDM) lets a
committed position of the current block be decided again (then it changes, unlike above); and
``codd="ar_product"`` takes the block's joint from a second, autoregressive model (APD).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..arguments import check_flag, is_int
from ..backbones.noise import corrupt
from .schedule import per_row_counts, split_evenly
from .step import CIRCUIT_MODES, BlockDecoder

__all__ = ["generate", "denoise", "DecodeCalls"]


class DecodeCalls(NamedTuple):
    """Forward passes a decoding run made: of the backbone, and of ``ar_model`` (``codd="ar_product"``)."""
    backbone: int
    ar: int


@torch.no_grad()
def generate(backbone, prompt: torch.Tensor | None = None, *, layer=None, gen_length: int, block_length: int,
             steps: int, remasking: str = "low_confidence", temperature: float = 1.0,
             threshold: float | None = None, entropy_bound: float | None = None, remask: float = 0.0,
             codd: str = "off", pc_frac: float | None = None, ar_model=None, ar_weight: float = 0.5,
             generator: torch.Generator | None = None, batch_size: int | None = None, return_calls: bool = False):
    """Decode ``gen_length`` tokens after ``prompt`` [B, P] -> tokens [B, P + gen_length] (and, with
    ``return_calls``, the :class:`DecodeCalls` made).

    backbone      a :class:`~pcdiff.backbones.Backbone` (``vocab_size``, ``noise``, ``mask_id``; tokens ->
                  logits, hidden), masked or uniform-noise (see the module docstring)
    layer         the CoDD layer (``block_length``, ``distribution(...)``); needed with codd "joint" or "any_order"
    gen_length    a multiple of ``block_length``; blocks are decoded left to right
    steps         backbone calls in all, one per block..gen_length, split as evenly as possible over the blocks
    remasking     which masked positions a step commits: "low_confidence", "margin", "entropy", "random"
                  (codd="ar_product" commits the leftmost ones and reads no rule)
    temperature   divides the logits (the layer's too, overriding its own); 0 = greedy: argmax, or
                  the MAP completion of the layer's p̂ at the layer's own temperature
    threshold     also commit every masked position whose confidence exceeds it (Fast-dLLM, Wu et al.,
                  arXiv 2505.22618); a block then ends as soon as it is decoded, so ``steps`` becomes an
                  upper bound
    entropy_bound γ >= 0 (EB-sampler, Ben-Hamu et al., arXiv 2505.24857): also commit the longest prefix of
                  the masked positions, in the remasking rule's order, whose summed entropy minus its
                  largest is <= γ ("entropy": lowest entropy first, as DiffusionGemma); at least one.
                  The schedule stays the floor, so ``steps`` is an upper bound (steps = gen_length: the
                  pure rule). Entropies of the layer's exact marginals with "joint"/"any_order"
    remask        σ in [0, 1) (ReMDM, Wang et al., arXiv 2503.00307): before each step of a block but its
                  last, each position committed at an earlier step of the block is masked again with
                  probability σ and the step commits that many more; see :mod:`pcdiff.decode.remask`
    codd          "off" (factorized), "joint", "any_order" or "ar_product"; see :mod:`pcdiff.decode.step`
    pc_frac       use the circuit only while the block's masked fraction is below it
    ar_model      with codd="ar_product": a causal model with the backbone's vocabulary and mask id whose
                  logits at i read only tokens before i (:class:`~pcdiff.backbones.TinyCausalTransformer`)
    ar_weight     w in [0, 1] of the AR product q^(1-w)·p_AR^w (APD, Israel et al., arXiv 2506.00413);
                  0 = the factorized proposal, 1 = the AR model alone; see :mod:`pcdiff.decode.proposals`
    generator     a torch.Generator (on the backbone's device) for reproducible runs
    batch_size    rows to generate when ``prompt`` is None (default 1)
    return_calls  also return the forward passes made, backbone and AR model counted apart
    """
    x, prompt_length, to_decide = _start(backbone, prompt, batch_size, gen_length)
    return denoise(backbone, x, to_decide=to_decide, layer=layer, start=prompt_length, block_length=block_length,
                   steps=steps, remasking=remasking, temperature=temperature, threshold=threshold,
                   entropy_bound=entropy_bound, remask=remask, codd=codd, pc_frac=pc_frac, ar_model=ar_model,
                   ar_weight=ar_weight, generator=generator, return_calls=return_calls)


@torch.no_grad()
def denoise(backbone, x: torch.Tensor, *, to_decide: torch.Tensor | None = None, layer=None, start: int = 0,
            block_length: int, steps: int, remasking: str = "low_confidence", temperature: float = 1.0,
            threshold: float | None = None, entropy_bound: float | None = None, remask: float = 0.0,
            codd: str = "off", pc_frac: float | None = None, ar_model=None, ar_weight: float = 0.5,
            generator: torch.Generator | None = None, return_calls: bool = False):
    """Decide every position of ``x[:, start:]`` [B, N] (a multiple of ``block_length`` long) marked in
    ``to_decide`` [B, N] bool (default, masked backbones only: ``x == mask_id``; whatever ``x`` holds
    there is replaced by the backbone's noise), block by block, with at most ``steps`` backbone calls
    split evenly over the blocks; returns a new tensor (and, with ``return_calls``, the
    :class:`DecodeCalls` made). The other arguments are :func:`generate`'s. A block with nothing to
    decide costs no call; the other positions of ``x`` are never changed, with ``remask`` too."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype != torch.long or x.shape[0] < 1:
        raise ValueError(f"x must be a [batch, length] torch.long tensor, got {getattr(x, 'dtype', type(x))} "
                         f"of shape {tuple(getattr(x, 'shape', ()))}")
    if not is_int(start) or not 0 <= start < x.shape[1]:
        raise ValueError(f"start must be an int in [0, {x.shape[1]}) (x's length), got {start!r}")
    span = x.shape[1] - start
    _check(backbone, layer, gen_length=span, block_length=block_length, steps=steps, codd=codd)
    _check_ar_model(backbone, ar_model, x.shape[1])
    check_flag("return_calls", return_calls)
    undecided = _to_decide(backbone, x, to_decide, start)
    decoder = BlockDecoder(layer, mask_id=backbone.mask_id, remasking=remasking, temperature=temperature,
                           threshold=threshold, entropy_bound=entropy_bound, remask=remask, codd=codd,
                           pc_frac=pc_frac, ar_model=ar_model, ar_weight=ar_weight, generator=generator)
    x = x.clone()
    calls = 0
    for block, block_steps in enumerate(split_evenly(steps, span // block_length)):
        lo = start + block * block_length
        calls += _decode_block(backbone, decoder, x, undecided, lo, lo + block_length, block_steps)
    return (x, DecodeCalls(calls, decoder.ar_calls)) if return_calls else x


def _decode_block(backbone, decoder: BlockDecoder, x: torch.Tensor, undecided: torch.Tensor, lo: int, hi: int,
                  steps: int) -> int:
    """Decode the block ``x[:, lo:hi]`` in place in at most ``steps`` backbone calls, clearing its
    positions of ``undecided`` [B, N] as they are committed; returns the calls made."""
    opened = undecided[:, lo:hi].clone()           # [B, L] to decide at the block's start: all remask may touch
    for k, count in enumerate(per_row_counts(opened, steps)):
        masked = undecided[:, lo:hi].clone()                                     # [B, L]
        if not masked.any():                                                     # done early (a threshold, few left)
            return k
        if decoder.remask and k < steps - 1:       # the last step re-masks nothing, so the block ends decoded
            again = decoder.remask_block(opened & ~masked)
            masked, count = masked | again, count + again.sum(-1)
            undecided[:, lo:hi] = masked
        # the model's own noise at every position still to decide; decided ones are clamped
        x.copy_(corrupt(x, undecided, backbone, decoder.generator))
        out = backbone(x)
        x[:, lo:hi], committed = decoder.step(out.logits[:, lo:hi], out.hidden[:, lo:hi], x[:, lo:hi], masked,
                                              count, context=x[:, :lo], return_committed=True)
        undecided[:, lo:hi] = masked & ~committed
    return steps


def _to_decide(backbone, x: torch.Tensor, to_decide: torch.Tensor | None, start: int) -> torch.Tensor:
    """[B, N] bool, a fresh tensor: the positions to decide (checked), by default the mask ids of a
    masked backbone's ``x``."""
    masked_noise = getattr(backbone, "noise", "mask") == "mask"
    if to_decide is None:
        if not masked_noise:
            raise ValueError("a uniform-noise backbone's noisy positions look like any token: pass to_decide "
                             "([batch, length] bool, True = to decide)")
        return x == backbone.mask_id
    if not isinstance(to_decide, torch.Tensor) or to_decide.dtype != torch.bool or to_decide.shape != x.shape:
        raise ValueError(f"to_decide must be a bool tensor of x's shape {tuple(x.shape)}, got "
                         f"{getattr(to_decide, 'dtype', type(to_decide).__name__)} of shape "
                         f"{tuple(getattr(to_decide, 'shape', ()))}")
    to_decide = to_decide.to(x.device)
    if bool(to_decide[:, :start].any()):
        raise ValueError(f"to_decide marks a position before start={start}: only x[:, start:] is decoded")
    if masked_noise and bool((~to_decide & (x == backbone.mask_id))[:, start:].any()):
        raise ValueError(f"x holds the mask id {backbone.mask_id} at a position after start that to_decide "
                         "leaves decided")
    return to_decide.clone()


def _start(backbone, prompt, batch_size, gen_length) -> tuple[torch.Tensor, int, torch.Tensor]:
    """The initial sequence (the prompt followed by ``gen_length`` positions holding the backbone's
    noise token, or 0 for uniform noise: :func:`denoise` noises them), the prompt's length, and the
    positions to decide [B, P + gen_length]."""
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
    fill = backbone.mask_id if getattr(backbone, "noise", "mask") == "mask" else 0
    masks = torch.full((prompt.shape[0], gen_length), fill, dtype=torch.long, device=prompt.device)
    to_decide = torch.zeros(prompt.shape[0], prompt.shape[1] + gen_length, dtype=torch.bool, device=prompt.device)
    to_decide[:, prompt.shape[1]:] = True
    return torch.cat([prompt, masks], dim=1), prompt.shape[1], to_decide


def _check(backbone, layer, *, gen_length, block_length, steps, codd) -> None:
    """The loop's own arguments and the layer's fit to the backbone (the step's knobs are
    :class:`BlockDecoder`'s to check)."""
    if not is_int(block_length) or block_length < 1:
        raise ValueError(f"block_length must be a positive int, got {block_length!r}")
    if gen_length % block_length:
        raise ValueError(f"gen_length ({gen_length}) must be a multiple of block_length ({block_length})")
    blocks = gen_length // block_length                   # each block needs a step of its own
    if not is_int(steps) or not blocks <= steps <= gen_length:
        raise ValueError(f"steps must be an int in [{blocks} (one per block), gen_length={gen_length}], got {steps!r}")
    if codd not in CIRCUIT_MODES or layer is None:
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


def _check_ar_model(backbone, ar_model, length: int) -> None:
    """``ar_model``'s fit to the backbone (whether one is needed is :class:`BlockDecoder`'s to check)."""
    if ar_model is None:
        return
    # a uniform-noise backbone has no mask id: the AR model's (its start symbol) is its own business
    names = ("vocab_size", "mask_id") if getattr(backbone, "noise", "mask") == "mask" else ("vocab_size",)
    for name in names:
        ours, theirs = getattr(ar_model, name, None), getattr(backbone, name)
        if ours != theirs:
            raise ValueError(f"ar_model's {name} ({ours}) differs from the backbone's ({theirs})")
    reach = getattr(ar_model, "block_length", None)
    if reach is not None and reach < length:
        raise ValueError(f"ar_model reads at most {reach} positions (its block_length), but the sequence has {length}")


def _device(module) -> torch.device:
    try:
        return next(module.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")
