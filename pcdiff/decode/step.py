"""One decoding step on one block: propose tokens for its masked positions, commit some of them.

Where the proposals come from (``codd``):
  "off"        factorized: each position drawn independently from softmax(logits / T);
  "joint"      one exact joint sample of the block's masked positions from the CoDD layer's
               distribution; confidences are the layer's exact marginals;
  "any_order"  positions committed one at a time within a step, each from its exact conditional
               given everything committed before it (the distribution's any-order sampler, the
               paper's CoDD+AO);
``pc_frac`` (the paper's gating) uses the circuit only while the block's masked fraction is below it.

Exactness. With ``codd="joint"`` a step that commits a set chosen without looking at the sampled
tokens ("margin", "entropy", "random") draws that set exactly from the layer's joint; the
"low_confidence" rule scores the sampled tokens themselves, which tilts the kept set toward likely
values (as in LLaDA). ``"any_order"`` is exact for any rule.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..codd.checks import check_finite
from ..arguments import check_number
from ..codd.rules import check_rule, confidence, draw
from .schedule import commit_count, select_top

__all__ = ["BlockDecoder", "CODD_MODES"]

CODD_MODES = ("off", "joint", "any_order")


class BlockDecoder:
    """The knobs that stay fixed during a run; :meth:`step` is called once per backbone call."""

    def __init__(self, layer=None, *, mask_id: int, remasking: str = "low_confidence", temperature: float = 1.0,
                 threshold: float | None = None, codd: str = "off", pc_frac: float | None = None,
                 generator: torch.Generator | None = None):
        _check_knobs(layer, remasking=remasking, temperature=temperature, threshold=threshold, codd=codd,
                     pc_frac=pc_frac, generator=generator)
        self.layer, self.rule, self.threshold, self.generator = layer, remasking, threshold, generator
        self.mask_id, self.codd, self.pc_frac = mask_id, codd, pc_frac
        self.greedy = temperature == 0
        # greedy decoding ranks positions by the untempered distribution, as LLaDA does, and takes
        # the layer's own temperature (part of its model p̂) for the MAP completion
        self.temperature = 1.0 if self.greedy else float(temperature)
        self.layer_temperature = None if self.greedy else float(temperature)

    def step(self, logits: torch.Tensor, hidden: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor,
             count: int) -> torch.Tensor:
        """logits [B, L, V], hidden [B, L, D], tokens [B, L] (mask ids where ``masked`` [B, L]),
        ``count`` from the schedule -> the block's tokens [B, L] with this step's positions committed.

        Rows whose masked fraction is not below ``pc_frac`` use the factorized proposal. NaN or +inf
        logits are refused here, where every path (the factorized one draws from them directly) meets them.
        """
        check_finite(logits, "the backbone's logits", allow_neg_inf=True)
        use_circuit = torch.full(masked.shape[:1], self.codd != "off", device=masked.device)
        if self.pc_frac is not None:
            use_circuit &= masked.float().mean(-1) < self.pc_frac
        circuit = {"joint": self.joint, "any_order": self.any_order}.get(self.codd)
        out = tokens.clone()
        for rows, propose in ((~use_circuit, self.factorized), (use_circuit, circuit)):
            if rows.any():
                out[rows] = propose(logits[rows], hidden[rows], tokens[rows], masked[rows], count)
        return out

    def factorized(self, logits, hidden, tokens, masked, count):
        logits = logits if logits.dtype == torch.float64 else logits.float()
        if 0 <= self.mask_id < logits.shape[-1]:     # a mask id inside the vocabulary is never a token
            logits = logits.index_fill(-1, torch.tensor([self.mask_id], device=logits.device), -math.inf)
        banned = masked & torch.isneginf(logits.amax(-1))        # softmax over no token at all: NaN, not a draw
        if bool(banned.any()):
            b, i = (int(v) for v in banned.nonzero()[0])
            raise ValueError(f"the backbone's logits ban every token (all -inf, the mask id aside) at masked "
                             f"position [{b}, {i}] of the block: nothing can be drawn there")
        probs = F.softmax(logits / self.temperature, dim=-1)                    # [B, L, V]
        return self._commit(probs, draw(probs, self.greedy, self.generator), tokens, masked, count)

    def joint(self, logits, hidden, tokens, masked, count):
        dist = self._distribution(logits, hidden, tokens, masked)
        if self.greedy:
            proposal, probs = dist.map().assignment, dist.marginals(over_candidates=True)
        else:
            # one upward pass of the circuit (and its backward) gives both the joint sample and the marginals
            proposal, probs = dist.sample_with_marginals(generator=self.generator, over_candidates=True)
        # probs are over each position's candidates (every token without top-k: no [B, L, V] with it)
        return self._commit(probs, proposal, tokens, masked, count, chosen=dist.candidate_slot(proposal))

    def any_order(self, logits, hidden, tokens, masked, count):
        """``count`` positions (and, with a threshold, every position above it) committed one at a
        time by the distribution's any-order sampler; the others stay masked."""
        dist = self._distribution(logits, hidden, tokens, masked)
        return dist.sample_any_order(self.rule, self.generator, budget=count, threshold=self.threshold,
                                     greedy=self.greedy)

    def _distribution(self, logits, hidden, tokens, masked):
        return self.layer.distribution(logits, hidden, tokens, masked, temperature=self.layer_temperature)

    def _commit(self, probs, proposal, tokens, masked, count, chosen=None):
        """``chosen``: where each proposed token sits on probs' last axis (default: its id)."""
        scores = confidence(self.rule, probs, proposal if chosen is None else chosen, self.generator)
        pick = select_top(scores, masked, commit_count(count, scores, masked, self.threshold))
        return torch.where(pick, proposal, tokens)


def _check_knobs(layer, *, remasking, temperature, threshold, codd, pc_frac, generator) -> None:
    check_rule(remasking)
    check_number("temperature", temperature, strict=False)
    if threshold is not None:
        check_number("threshold", threshold, strict=False, most=1)
        if remasking == "random":
            raise ValueError("threshold needs a confidence-based remasking rule, not 'random'")
    if codd not in CODD_MODES:
        raise ValueError(f"codd must be one of {CODD_MODES}, got {codd!r}")
    if pc_frac is not None:
        if codd == "off":
            raise ValueError("pc_frac gates the CoDD layer; it needs codd='joint' or 'any_order'")
        check_number("pc_frac", pc_frac, most=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if codd != "off" and layer is None:
        raise ValueError(f"codd={codd!r} needs a CoDD layer (layer=...)")
