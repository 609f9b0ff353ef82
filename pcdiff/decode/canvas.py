"""Canvas decoding for uniform-noise block diffusion (DiffusionGemma), with or without the CoDD layer.

The model's own loop (``DiffusionGemmaForBlockDiffusion.generate``), block by block after the prompt: the
canvas starts as uniformly random tokens; each step the decoder reads it (and the previous step's logits as
self-conditioning), the logits are divided by a linearly falling temperature
(:func:`.schedule.linear_temperature`), every position draws a token, the EB-sampler's entropy bound
(arXiv 2505.24857; :func:`.schedule.entropy_bound_count`) accepts the lowest-entropy prefix, and every other
position is renoised uniformly. A block stops early once the per-position argmax canvas has been stable for
``stability_threshold`` steps and the mean entropy is below ``confidence_threshold``; its tokens are that
argmax canvas, which is encoded into the cache before the next block.

``codd="off"`` is that loop, draw for draw: the model draws with ``torch.multinomial`` and renoises with
``torch.randint``, both from ``generator`` (None: torch's global generator, which is what the model's
``generate`` uses, so seeding globally before each call gives the same tokens; the one exception to the
project's single draw, kept for parity). The model re-decides *every* position each step (an accepted token
only seeds the next step's canvas); ``keep_accepted=True`` makes acceptance final instead: accepted positions
keep their tokens, only the others are proposed, ranked and renoised, the last step accepts everything, and the
block's tokens are the accepted canvas (a block stops when every position is accepted).

``codd="joint"`` (always ``keep_accepted``): the step's proposal for the undecided positions is one exact
joint sample of the layer's p̂ ∝ C(x) · Π softmax(processed logits / T_layer) given the accepted tokens
(``layer.distribution`` with ``masked`` = not yet accepted; the project's draw, from ``generator``). Which
positions it accepts:

* ``acceptance="entropy_bound"``: the model's rule on the backbone's factorized entropies;
* ``acceptance="joint"``: the same rule (the one implementation) on the entropies of p̂'s *exact marginals*
  given the accepted tokens. The EB bound Σ H_i − max H_i caps the total correlation among the accepted
  tokens: for independent draws it bounds the error of drawing them apart, which is zero here (the sample is
  exact under p̂); what it then caps is how much dependence among one step's tokens rests on the circuit
  rather than on the next backbone call, measured on the distribution the tokens were actually drawn from
  (p̂'s marginals: the coupling with already accepted tokens sharpens or flattens them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..arguments import check_flag, check_int, check_number
from ..codd.rules import entropy
from .schedule import entropy_bound_count, linear_temperature, select_top

__all__ = ["CANVAS_CODD", "ACCEPTANCE", "CanvasResult", "generate_canvas", "propose", "accept"]

CANVAS_CODD = ("off", "joint")
ACCEPTANCE = ("entropy_bound", "joint")


class CanvasResult(NamedTuple):
    """``tokens`` [B, P + blocks·L]: the prompt then the blocks; ``forward_passes`` [B] decoder calls per row
    (a row that stopped early is not counted further, as in the model's ``tokens_per_forward``)."""
    tokens: torch.Tensor
    forward_passes: torch.Tensor


@dataclass(frozen=True)
class _Settings:
    steps: int
    t_min: float
    t_max: float
    entropy_bound: float
    stability_threshold: int | None
    confidence_threshold: float | None
    layer: object
    codd: str
    acceptance: str
    keep_accepted: bool


def generate_canvas(backbone, prompt: torch.Tensor, *, blocks: int = 1, steps: int = 48, t_min: float = 0.4,
                    t_max: float = 0.8, entropy_bound: float = 0.1, stability_threshold: int | None = 1,
                    confidence_threshold: float | None = 0.005, layer=None, codd: str = "off",
                    acceptance: str = "entropy_bound", keep_accepted: bool | None = None,
                    eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None,
                    generator: torch.Generator | None = None) -> CanvasResult:
    """Decode ``blocks`` canvases after ``prompt`` [B, P] (see the module docstring).

    ``backbone``: a :class:`pcdiff.backbones.DiffusionGemmaBackbone` (or anything with its ``start`` /
    ``decode`` / ``extend``, ``canvas_length`` and ``vocab_size``). ``steps``, ``t_min``, ``t_max``,
    ``entropy_bound``, ``stability_threshold``, ``confidence_threshold`` are the model's
    ``max_denoising_steps``, ``t_min``, ``t_max``, ``sampler_config.entropy_bound`` and stopping thresholds
    (defaults: the model's); either threshold None turns the early stop off. ``layer``: a CoDD layer over
    ``canvas_length`` positions and the backbone's vocabulary (``codd="joint"``). ``keep_accepted``
    defaults to False with ``codd="off"`` (the model's loop) and must be True (the default) with "joint".
    ``eos_token_id``, ``pad_token_id``: the model's end of a row: a row whose block holds an EOS is finished,
    its later tokens become ``pad_token_id`` (when given), and decoding ends once every row has finished.
    Prompts are one length per batch (no padding mask).
    """
    check_int("blocks", blocks, 1)
    check_int("steps", steps, 1)
    check_number("t_min", t_min, strict=False)
    check_number("t_max", t_max, least=t_min)
    check_number("entropy_bound", entropy_bound)
    check_int("stability_threshold", stability_threshold, 0, optional=True)
    check_number("confidence_threshold", confidence_threshold, optional=True)
    if codd not in CANVAS_CODD:
        raise ValueError(f"codd must be one of {CANVAS_CODD}, got {codd!r}")
    if acceptance not in ACCEPTANCE:
        raise ValueError(f"acceptance must be one of {ACCEPTANCE}, got {acceptance!r}")
    keep_accepted = codd == "joint" if keep_accepted is None else check_flag("keep_accepted", keep_accepted)
    if codd == "joint":
        _check_layer(layer, backbone)
        if not keep_accepted:
            raise ValueError("keep_accepted must be True with codd='joint' (the joint sample is drawn given the "
                             "accepted tokens)")
    elif acceptance == "joint":
        raise ValueError("acceptance='joint' needs the layer's exact marginals: use codd='joint'")
    settings = _Settings(steps, t_min, t_max, entropy_bound, stability_threshold, confidence_threshold, layer,
                         codd, acceptance, keep_accepted)
    eos = None if eos_token_id is None else torch.as_tensor(eos_token_id, device=prompt.device).reshape(-1)
    check_int("pad_token_id", pad_token_id, 0, backbone.vocab_size - 1, optional=True)
    context = backbone.start(prompt)
    out, passes = [prompt], torch.zeros(prompt.shape[0], dtype=torch.long, device=prompt.device)
    done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)    # rows past an EOS
    for b in range(blocks):
        if b:
            backbone.extend(context, out[-1])
        block, block_passes = _denoise_block(backbone, context, settings, generator, done)
        block, done = _end_rows(block, done, eos, pad_token_id)
        out.append(block)
        passes += block_passes
        if bool(done.all()):
            break
    return CanvasResult(torch.cat(out, dim=-1), passes)


def _end_rows(block: torch.Tensor, done: torch.Tensor, eos: torch.Tensor | None, pad: int | None):
    """The model's end of rows after a block [B, L]: rows done before are all pad, rows with an EOS in it
    are done and padded after their first EOS (pad None: nothing replaced). -> (block, done)."""
    if eos is None:
        return block, done
    has_eos = torch.isin(block, eos)                                             # [B, L], before padding
    now_done = done | has_eos.any(-1)
    if pad is not None and bool(now_done.any()):
        block = block.masked_fill(done[:, None], pad)
        is_eos = torch.isin(block, eos)
        seen = is_eos.cumsum(-1)
        block = block.masked_fill((seen > 0) & ~((seen == 1) & is_eos), pad)    # after the first EOS
    return block, now_done


def _check_layer(layer, backbone) -> None:
    if layer is None:
        raise ValueError("codd='joint' needs a layer (a pcdiff.codd.CoDDLayer over the canvas)")
    if layer.block_length != backbone.canvas_length or layer.vocab_size != backbone.vocab_size:
        raise ValueError(f"layer covers {layer.block_length} positions over {layer.vocab_size} tokens; the canvas "
                         f"is {backbone.canvas_length} positions over {backbone.vocab_size}")


def _denoise_block(backbone, context, s: _Settings, generator, done) -> tuple[torch.Tensor, torch.Tensor]:
    """One canvas from uniform noise to tokens [B, L]; and the decoder calls per row [B] (not counted for
    rows ``done`` [B] before the block, which are decoded all the same, as the model does)."""
    batch, length, vocab = context.batch, backbone.canvas_length, backbone.vocab_size
    device = backbone.device
    canvas = torch.randint(0, vocab, (batch, length), generator=generator, device=device)   # the model's first draw
    argmax, sc_logits = canvas, None
    accepted = torch.zeros(batch, length, dtype=torch.bool, device=device)          # final (keep_accepted) only
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    passes = torch.zeros(batch, dtype=torch.long, device=device)
    stop = _StableAndConfident(s.stability_threshold, s.confidence_threshold)
    for remaining in range(s.steps, 0, -1):
        passes += ~(finished | done)
        out = backbone.decode(context, canvas, sc_logits)
        logits = out.logits / linear_temperature(remaining, s.steps, s.t_min, s.t_max)   # [B, L, V] processed
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
        undecided = ~accepted
        proposal, entropies = propose(logits, probs, out.hidden, canvas, undecided, generator,
                                      s.layer if s.codd == "joint" else None, s.acceptance)
        take = accept(entropies, undecided, s.entropy_bound)                       # [B, L] positions accepted
        if s.keep_accepted and remaining == 1:
            take = undecided                                                         # the last step decides all
        new_canvas = torch.where(take, proposal, canvas)
        kept = (accepted | take) if s.keep_accepted else take
        noise = torch.randint(0, vocab, (batch, length), generator=generator, device=device)
        new_canvas = torch.where(kept, new_canvas, noise)                            # renoise the rest
        new_argmax = logits.argmax(-1)
        if s.keep_accepted:
            accepted = torch.where(finished[:, None], accepted, kept)
            canvas = torch.where(finished[:, None], canvas, new_canvas)
            finished = finished | accepted.all(-1)
        else:
            # rows already stopped keep their canvas, argmax and self-conditioning (the model's rule)
            new_argmax = torch.where(finished[:, None], argmax, new_argmax)
            canvas = torch.where(finished[:, None], canvas, new_canvas)
            if sc_logits is not None:
                logits = torch.where(finished[:, None, None], sc_logits, logits)
                probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
            finished = finished | stop(new_argmax, entropy(probs))
        argmax, sc_logits = new_argmax, logits
        if bool(finished.all()):
            break
    return (canvas if s.keep_accepted else argmax), passes


def propose(logits: torch.Tensor, probs: torch.Tensor, hidden: torch.Tensor, canvas: torch.Tensor,
            undecided: torch.Tensor, generator: torch.Generator | None = None, layer=None,
            acceptance: str = "entropy_bound") -> tuple[torch.Tensor, torch.Tensor]:
    """One step's proposal: processed ``logits`` [B, L, V] and their softmax ``probs``, the decoder's
    ``hidden`` [B, L, D], the ``canvas`` [B, L] and its ``undecided`` positions [B, L] -> the step's tokens
    [B, L] (meaningful at the undecided positions) and the entropies [B, L] acceptance ranks by.
    ``layer`` None: the model's independent draws; else one exact joint sample of the layer's p̂."""
    if layer is None:
        flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)   # the model's draw
        return flat.reshape(canvas.shape), entropy(probs)
    dist = layer.distribution(logits, hidden, canvas, undecided)
    sample, marginals = dist.sample_with_marginals(generator=generator, over_candidates=True)
    return sample, (entropy(marginals) if acceptance == "joint" else entropy(probs))


def accept(entropies: torch.Tensor, undecided: torch.Tensor, bound: float) -> torch.Tensor:
    """The EB-sampler's accepted positions [B, L]: the undecided ones in ascending entropy, the longest prefix
    with Σ H − max H <= ``bound`` (:func:`.schedule.entropy_bound_count`, the one implementation)."""
    scores = -entropies
    return select_top(scores, undecided, entropy_bound_count(scores, entropies, undecided, bound))


class _StableAndConfident:
    """The model's early stop: the argmax canvas equals each of the ``stability`` before it, and the mean
    entropy of the processed logits is below ``confidence`` (both None: never)."""

    def __init__(self, stability: int | None, confidence: float | None):
        self.stability, self.confidence = stability, confidence
        self.history: list[torch.Tensor] = []

    def __call__(self, argmax: torch.Tensor, entropies: torch.Tensor) -> torch.Tensor:
        if self.stability is None or self.confidence is None:
            return torch.zeros(argmax.shape[0], dtype=torch.bool, device=argmax.device)
        stable = torch.ones(argmax.shape[0], dtype=torch.bool, device=argmax.device)
        if self.stability:
            full = len(self.history) == self.stability
            for earlier in self.history:
                stable &= (earlier == argmax).all(-1)
            stable &= full
            self.history = (self.history + [argmax])[-self.stability:]
        return stable & (entropies.mean(-1) < self.confidence)
