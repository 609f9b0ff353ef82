"""Proposals that need no circuit: the backbone's factorized distribution, and its product with an
autoregressive model (``codd="ar_product"``).

AR product (the idea of APD, Israel et al., arXiv 2506.00413, and of Discrete Copula Diffusion: a
second model supplies the dependence the factorized marginals lack). The step's positions are drawn
left to right, position i from

    r_i(x) ∝ q_i(x)^(1-w) · p_AR(x | x_<i)^w,

where q_i = softmax(logits_i / T) is the backbone's marginal from this step's call and x_<i is
everything to the left of i: the prompt, earlier blocks, given tokens and the tokens just drawn.
The block's draw is therefore the chain Π_i r_i(x_i | x_<i), each factor renormalized on its own
(APD's multiplicative mixture, position by position); it is not the globally normalized
q^(1-w)·p_AR^w, whose normalizer would sum over every continuation. The step commits the leftmost
positions it owes (the AR model's own order), so only those are drawn: one AR forward pass per
drawn position (batched over the rows that draw there), none when w = 0 (p_AR^0 = 1).

How it differs from APD: APD drafts the block from the diffusion marginals in parallel and accepts a
prefix by a speculative-decoding test that needs one AR pass per step (with a KV cache), so the
number of tokens a step keeps adapts; here each drawn position costs one AR pass (no cache: the
prefix is re-read), the draw is exact for the chain above, and the schedule sets the count.

The noise of every position is drawn before the first position (:func:`~pcdiff.codd.rules.gumbel_noise`,
the noise a one-shot draw of the block would use), so with w = 0 the tokens equal the factorized
proposal's under the same seed, and at any w each position's draw is exact given the ones before it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..codd.checks import check_finite
from ..codd.rules import draw, gumbel_noise
from .schedule import commit_count, leftmost

__all__ = ["ban_mask", "factorized_probs", "ARProduct"]


def ban_mask(logits: torch.Tensor, mask_id: int | None) -> torch.Tensor:
    """``logits`` [..., V] with the mask id at -inf when it lies inside the vocabulary (never a token);
    unchanged without a mask id (a uniform-noise backbone)."""
    if mask_id is not None and 0 <= mask_id < logits.shape[-1]:
        return logits.index_fill(-1, torch.tensor([mask_id], device=logits.device), -math.inf)
    return logits


def factorized_probs(logits: torch.Tensor, masked: torch.Tensor, mask_id: int | None,
                     temperature: float) -> torch.Tensor:
    """The backbone's proposal softmax(logits / T) [B, L, V] (float32 at least, the mask id banned);
    refuses a masked position whose logits ban every token."""
    logits = ban_mask(logits if logits.dtype == torch.float64 else logits.float(), mask_id)
    banned = masked & torch.isneginf(logits.amax(-1))        # softmax over no token at all: NaN, not a draw
    if bool(banned.any()):
        b, i = (int(v) for v in banned.nonzero()[0])
        raise ValueError(f"the backbone's logits ban every token (all -inf, the mask id aside) at masked "
                         f"position [{b}, {i}] of the block: nothing can be drawn there")
    return F.softmax(logits / temperature, dim=-1)


class ARProduct:
    """The AR-product proposal with its model ``model`` (tokens [B, N] -> ``.logits`` [B, N, V], logits
    at i conditioned on tokens before i only, e.g. :class:`~pcdiff.backbones.TinyCausalTransformer`)
    and weight ``weight`` = w in [0, 1]. ``calls`` counts its forward passes (not backbone calls)."""

    def __init__(self, model, weight: float, mask_id: int | None):
        self.model, self.weight, self.mask_id = model, float(weight), mask_id
        self.calls = 0

    def step(self, probs: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor, count, context: torch.Tensor,
             *, greedy: bool, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
        """probs [B, L, V] the factorized proposal q, tokens [B, L] (anything where ``masked``), the
        schedule's ``count``, ``context`` [B, P] the tokens left of the block -> (the block's tokens
        [B, L] with the ``count`` leftmost masked positions of each row drawn and committed, those
        positions [B, L] bool)."""
        pick = leftmost(masked, commit_count(count, None, masked, None))                # [B, L]
        noise = None if greedy else gumbel_noise(probs, generator)                      # [B, L, V]
        out = tokens.clone()
        for i in pick.any(0).nonzero().flatten().tolist():                              # left to right
            rows = pick[:, i]                                                           # [B] drawing at i
            mixed = self._mix(probs[rows, i], torch.cat([context[rows], out[rows, :i + 1]], dim=1), temperature)
            out[rows, i] = draw(mixed, greedy, noise=None if noise is None else noise[rows, i])
        return out, pick

    def _mix(self, q: torch.Tensor, prefix: torch.Tensor, temperature: float) -> torch.Tensor:
        """r ∝ q^(1-w) · p_AR(· | prefix[:, :-1])^w [R, V] from q [R, V]; ``prefix`` [R, P + i + 1] ends
        at the drawn position, whose own (undecided) token the causal model never reads for its logits."""
        if self.weight == 0:
            return q                                         # p_AR^0 = 1: no AR pass, q itself (same draw)
        logits = self.model(prefix).logits[:, -1]                                       # [R, V]
        self.calls += 1
        check_finite(logits, "ar_model's logits", allow_neg_inf=True)
        log_p = F.log_softmax(logits.to(q.dtype) / temperature, dim=-1)
        # w = 1 takes p_AR alone, where q's zeros count as q^0 = 1 (0 · log 0 would be NaN)
        log_r = log_p if self.weight == 1 else (1 - self.weight) * torch.log(q.clamp_min(0)) + self.weight * log_p
        log_r = ban_mask(log_r, self.mask_id)
        empty = torch.isneginf(log_r.amax(-1))                                          # [R]
        if bool(empty.any()):
            raise ValueError("codd='ar_product': the backbone's proposal and ar_model's conditional share no "
                             f"token (the mask id aside) in {int(empty.sum())} row(s): nothing can be drawn")
        return F.softmax(log_r, dim=-1)
