"""One decoding step on one block: propose tokens for its masked positions, commit some of them.

"Masked" here means *to decide*, whatever the backbone's noise: the positions come as a boolean
tensor, and what the block's tokens hold there (the mask id, or a uniformly random token for a
uniform-noise backbone) is never read as a decision. :meth:`BlockDecoder.step` says which positions
it committed (``return_committed``), so the loop keeps the set to decide without a mask id.

Where the proposals come from (``codd``):
  "off"        factorized: each position drawn independently from softmax(logits / T);
  "joint"      one exact joint sample of the block's masked positions from the CoDD layer's
               distribution; confidences are the layer's exact marginals;
  "any_order"  positions committed one at a time within a step, each from its exact conditional
               given everything committed before it (the distribution's any-order sampler, the
               paper's CoDD+AO);
  "ar_product" no circuit: the leftmost positions drawn left to right from the backbone's marginal
               times an autoregressive model's conditional, q^(1-w) · p_AR^w renormalized (APD's
               multiplicative mixture; ``ar_model``, ``ar_weight``; see :mod:`pcdiff.decode.proposals`);
``pc_frac`` (the paper's gating) uses the circuit only while the block's masked fraction is below it.

Exactness. With ``codd="joint"`` a step that commits a set chosen without looking at the sampled
tokens ("margin", "entropy", "random") draws that set exactly from the layer's joint; the
"low_confidence" rule scores the sampled tokens themselves, which tilts the kept set toward likely
values (as in LLaDA). ``"any_order"`` is exact for any rule.

How many positions a step commits: the schedule's count, raised by ``threshold`` (Fast-dLLM) or by
``entropy_bound`` (EB-sampler), the two adaptive rules of :mod:`pcdiff.decode.schedule`; their
scores and entropies are those of the proposal's distribution (the layer's exact marginals with
"joint" and "any_order"; "any_order" computes the entropy-bound count from the marginals at the
step's start, one extra marginals query, then draws that many positions one at a time). ``remask``
(ReMDM) makes committed positions to-decide again between steps (:mod:`pcdiff.decode.remask`).
"""
from __future__ import annotations

import torch

from ..arguments import check_number
from ..codd.checks import check_finite
from ..codd.rules import check_rule, confidence, draw, entropy
from .proposals import ARProduct, factorized_probs
from .remask import remask_positions
from .schedule import commit_count, select_top

__all__ = ["BlockDecoder", "CODD_MODES", "DECODER_MODES"]

CODD_MODES = ("off", "joint", "any_order")    # the uses of the CoDD layer (what the CLI offers)
CIRCUIT_MODES = ("joint", "any_order")        # the modes that need the layer
DECODER_MODES = CODD_MODES + ("ar_product",)  # every value of ``codd``: the AR product needs ar_model instead


class BlockDecoder:
    """The knobs that stay fixed during a run; :meth:`step` is called once per backbone call."""

    def __init__(self, layer=None, *, mask_id: int | None, remasking: str = "low_confidence", temperature: float = 1.0,
                 threshold: float | None = None, entropy_bound: float | None = None, remask: float = 0.0,
                 codd: str = "off", pc_frac: float | None = None, ar_model=None, ar_weight: float = 0.5,
                 generator: torch.Generator | None = None):
        _check_knobs(layer, remasking=remasking, temperature=temperature, threshold=threshold,
                     entropy_bound=entropy_bound, remask=remask, codd=codd, pc_frac=pc_frac, generator=generator)
        _check_ar(codd, ar_model, ar_weight, threshold=threshold, entropy_bound=entropy_bound)
        self.layer, self.rule, self.threshold, self.generator = layer, remasking, threshold, generator
        self.entropy_bound, self.remask = entropy_bound, float(remask)
        self.mask_id, self.codd, self.pc_frac = mask_id, codd, pc_frac
        self.ar = ARProduct(ar_model, ar_weight, mask_id) if codd == "ar_product" else None
        self.greedy = temperature == 0
        # greedy decoding ranks positions by the untempered distribution, as LLaDA does, and takes
        # the layer's own temperature (part of its model p̂) for the MAP completion
        self.temperature = 1.0 if self.greedy else float(temperature)
        self.layer_temperature = None if self.greedy else float(temperature)

    @property
    def ar_calls(self) -> int:
        """Forward passes of ``ar_model`` so far (0 without ``codd="ar_product"``): not backbone calls."""
        return 0 if self.ar is None else self.ar.calls

    def remask_block(self, eligible: torch.Tensor) -> torch.Tensor:
        """[B, L] bool: each ``eligible`` position chosen to be decided again with probability
        ``remask``; the loop calls it before each step of a block but its last (and puts the
        backbone's noise there)."""
        return remask_positions(eligible, self.remask, self.generator)

    def step(self, logits: torch.Tensor, hidden: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor,
             count: int | torch.Tensor, context: torch.Tensor | None = None, return_committed: bool = False):
        """logits [B, L, V], hidden [B, L, D], tokens [B, L] (any token, or the mask id, where
        ``masked`` [B, L]: never read there), ``count`` from the schedule (an int or one per row) ->
        the block's tokens [B, L] with this step's positions committed (and, with
        ``return_committed``, those positions [B, L] bool). ``context`` [B, P]: the sequence left of
        the block, which only "ar_product" reads (its AR model conditions on it).

        Rows whose masked fraction is not below ``pc_frac`` use the factorized proposal. NaN or +inf
        logits are refused here, where every path (the factorized one draws from them directly) meets them.
        """
        check_finite(logits, "the backbone's logits", allow_neg_inf=True)
        if self.ar is not None:
            if context is None:
                context = tokens[:, :0]
            probs = factorized_probs(logits, masked, self.mask_id, self.temperature)       # [B, L, V]
            out, committed = self.ar.step(probs, tokens, masked, count, context, greedy=self.greedy,
                                          temperature=self.temperature, generator=self.generator)
            return (out, committed) if return_committed else out
        use_circuit = torch.full(masked.shape[:1], self.codd != "off", device=masked.device)
        if self.pc_frac is not None:
            use_circuit &= masked.float().mean(-1) < self.pc_frac
        circuit = {"joint": self.joint, "any_order": self.any_order}.get(self.codd)
        count = torch.as_tensor(count, device=masked.device).expand(masked.shape[:1])        # [B]: rows split below
        out, committed = tokens.clone(), torch.zeros_like(masked)
        for rows, propose in ((~use_circuit, self.factorized), (use_circuit, circuit)):
            if rows.any():
                out[rows], committed[rows] = propose(logits[rows], hidden[rows], tokens[rows], masked[rows],
                                                     count[rows])
        return (out, committed) if return_committed else out

    # each proposal returns (the block's tokens [B, L], the positions it committed [B, L])
    def factorized(self, logits, hidden, tokens, masked, count):
        probs = factorized_probs(logits, masked, self.mask_id, self.temperature)           # [B, L, V]
        return self._committed(probs, draw(probs, self.greedy, self.generator), tokens, masked, count)

    def joint(self, logits, hidden, tokens, masked, count):
        dist = self._distribution(logits, hidden, tokens, masked)
        if self.greedy:
            proposal, probs = dist.map().assignment, dist.marginals(over_candidates=True)
        else:
            # one upward pass of the circuit (and its backward) gives both the joint sample and the marginals
            proposal, probs = dist.sample_with_marginals(generator=self.generator, over_candidates=True)
        # probs are over each position's candidates (every token without top-k: no [B, L, V] with it)
        return self._committed(probs, proposal, tokens, masked, count, chosen=dist.candidate_slot(proposal))

    def any_order(self, logits, hidden, tokens, masked, count):
        """``count`` positions (and, with a threshold, every position above it) committed one at a
        time by the distribution's any-order sampler; the others stay masked."""
        dist = self._distribution(logits, hidden, tokens, masked)
        if self.entropy_bound is not None:   # the bound reads the marginals before the first position is drawn
            probs = dist.marginals(over_candidates=True)                                 # [B, L, k]
            count = commit_count(count, confidence(self.rule, probs), masked, None, entropy(probs),
                                 self.entropy_bound)
        out, drawn_at = dist.sample_any_order(self.rule, self.generator, budget=count, threshold=self.threshold,
                                              greedy=self.greedy, return_order=True)
        return out, drawn_at >= 0

    def _distribution(self, logits, hidden, tokens, masked):
        return self.layer.distribution(logits, hidden, tokens, masked, temperature=self.layer_temperature)

    def _commit(self, probs, proposal, tokens, masked, count, chosen=None) -> torch.Tensor:
        """The block's tokens of :meth:`_committed`."""
        return self._committed(probs, proposal, tokens, masked, count, chosen)[0]

    def _committed(self, probs, proposal, tokens, masked, count, chosen=None):
        """(the block's tokens [B, L] with the committed positions taken from ``proposal``, those
        positions [B, L] bool: the rule's top ``count``, raised by the threshold or the entropy
        bound). ``chosen``: where each proposed token sits on probs' last axis (default: its id)."""
        scores = confidence(self.rule, probs, proposal if chosen is None else chosen, self.generator)
        entropies = None if self.entropy_bound is None else entropy(probs)             # [B, L]
        count = commit_count(count, scores, masked, self.threshold, entropies, self.entropy_bound)
        picked = select_top(scores, masked, count)                                       # [B, L]
        return torch.where(picked, proposal, tokens), picked


def _check_knobs(layer, *, remasking, temperature, threshold, entropy_bound, remask, codd, pc_frac,
                 generator) -> None:
    check_rule(remasking)
    check_number("temperature", temperature, strict=False)
    check_number("threshold", threshold, strict=False, most=1, optional=True)
    check_number("entropy_bound", entropy_bound, strict=False, optional=True)
    for name, value in (("threshold", threshold), ("entropy_bound", entropy_bound)):
        if value is not None and remasking == "random":
            raise ValueError(f"{name} needs a confidence-based remasking rule, not 'random'")
    if threshold is not None and entropy_bound is not None:
        raise ValueError("give threshold or entropy_bound, not both: each decides how many positions a step commits")
    check_number("remask", remask, strict=False, most=1)
    if remask == 1:
        raise ValueError("remask must be a probability in [0, 1): with 1 no committed token would survive a step")
    if codd not in DECODER_MODES:
        raise ValueError(f"codd must be one of {DECODER_MODES}, got {codd!r}")
    if pc_frac is not None:
        if codd not in CIRCUIT_MODES:
            raise ValueError("pc_frac gates the CoDD layer; it needs codd='joint' or 'any_order'")
        check_number("pc_frac", pc_frac, most=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if codd in CIRCUIT_MODES and layer is None:
        raise ValueError(f"codd={codd!r} needs a CoDD layer (layer=...)")


def _check_ar(codd, ar_model, ar_weight, *, threshold, entropy_bound) -> None:
    """The AR product's knobs: a model exactly when ``codd="ar_product"``, a weight in [0, 1], and no
    confidence-ranked count (the product commits left to right)."""
    check_number("ar_weight", ar_weight, strict=False, most=1)
    if codd != "ar_product":
        if ar_model is not None:
            raise ValueError(f"ar_model is read only with codd='ar_product', got codd={codd!r}")
        return
    if ar_model is None or not callable(ar_model):
        raise ValueError(f"codd='ar_product' needs an autoregressive model (ar_model=...), got {ar_model!r}")
    for name, value in (("threshold", threshold), ("entropy_bound", entropy_bound)):
        if value is not None:
            raise ValueError(f"{name} ranks positions by confidence, but codd='ar_product' commits them left to "
                             "right: leave it None")
