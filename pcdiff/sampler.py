"""Semi-autoregressive masked-diffusion sampling (LLaDA-style), with or without the CoDD layer.

The generated span starts fully masked and is decoded block by block, left to right. Within a
block every step calls the backbone once on the whole sequence (prompt + decoded tokens + mask
ids), proposes a token for each still-masked position of the block, and commits the positions a
remasking rule ranks highest; the others stay masked for a later step. A committed position never
changes again. How many positions a step commits follows LLaDA's schedule: the block's length
divided as evenly as possible over the block's steps, earlier steps taking the remainder.

Where the proposals come from (``codd``):
  "off"        factorized: each position drawn independently from softmax(logits / T);
  "joint"      one exact joint sample of the block's masked positions from the CoDD layer's
               distribution; confidences are the layer's exact marginals;
  "any_order"  positions committed one at a time within a step, each from its exact conditional
               given everything committed before it, the next position chosen by the remasking
               rule on the current conditionals (the paper's CoDD+AO);
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

__all__ = ["generate", "BlockDecoder", "split_evenly", "confidence", "select_top", "REMASKING", "CODD_MODES"]

REMASKING = ("low_confidence", "margin", "entropy", "random")
CODD_MODES = ("off", "joint", "any_order")


# ----------------------------------------------------------------------------------------------
# The schedule and the remasking rules
# ----------------------------------------------------------------------------------------------

def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` integers as evenly as possible, earlier parts taking the
    remainder: LLaDA's number of tokens committed per step (and our steps per block)."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def confidence(rule: str, probs: torch.Tensor, tokens: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """How sure each position is, by ``rule``: probs [B, L, V], tokens [B, L] -> scores [B, L].

    Higher commits first, and every score lies in [0, 1] so one ``threshold`` fits all rules:
      low_confidence  p(chosen token);
      margin          top-1 minus top-2 probability;
      entropy         exp(-entropy), a monotone transform (lowest entropy first);
      random          uniform noise.
    """
    if rule == "low_confidence":
        return probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if rule == "margin":
        if probs.shape[-1] == 1:
            return probs[..., 0]
        top = probs.topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]
    if rule == "entropy":
        return torch.exp(-torch.special.entr(probs.clamp_min(0)).sum(-1))     # exact marginals may dip below 0
    if rule == "random":
        return torch.rand(tokens.shape, generator=generator, device=tokens.device)
    raise ValueError(f"remasking must be one of {REMASKING}, got {rule!r}")


def select_top(scores: torch.Tensor, candidates: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """The ``count[b]`` highest-scoring candidates of each row: scores [B, L], candidates [B, L]
    bool, count [B] long (at most the row's candidates) -> [B, L] bool. Ties go to the left."""
    scores = scores.masked_fill(~candidates, -math.inf)
    order = scores.argsort(dim=-1, descending=True, stable=True)                # [B, L] positions by rank
    ranks = torch.arange(scores.shape[-1], device=scores.device)
    keep_rank = ranks.unsqueeze(0) < count.unsqueeze(-1)                        # [B, L] by rank
    return torch.zeros_like(candidates).scatter(-1, order, keep_rank) & candidates


def _step_count(count: int, scores: torch.Tensor, masked: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """Positions to commit per row this step [B]: the schedule's ``count``, raised to every masked
    position whose score exceeds ``threshold`` (Fast-dLLM), capped by what is still masked."""
    n = torch.full(masked.shape[:1], count, dtype=torch.long, device=masked.device)
    if threshold is not None:
        n = torch.maximum(n, ((scores > threshold) & masked).sum(-1))
    return torch.minimum(n, masked.sum(-1))


def _draw(probs: torch.Tensor, greedy: bool, generator: torch.Generator | None) -> torch.Tensor:
    """One token per position from probs [..., V] -> [...] (argmax when ``greedy``).

    An exact draw by the Gumbel-max trick, argmax(log p + G) with G = -log E, E ~ Exp(1), taken in
    probability space as argmax(p / E): no log of ``probs``, and several times faster on CPU than
    ``torch.multinomial``. A token of probability 0 (a banned mask id) is never drawn while another
    has mass: its score is 0, theirs positive.
    """
    if greedy:
        return probs.argmax(-1)
    u = torch.rand(probs.shape, generator=generator, device=probs.device, dtype=probs.dtype)
    race = u.clamp_min_(torch.finfo(probs.dtype).tiny).log_().neg_()           # E > 0 and finite: no 0/0, no inf
    # E > 0, so clamping the quotient clamps p: exact marginals may dip below 0
    return torch.div(probs, race, out=race).clamp_min_(0).argmax(-1)


# ----------------------------------------------------------------------------------------------
# One step on one block: propose tokens, commit the positions the rule picks
# ----------------------------------------------------------------------------------------------

class BlockDecoder:
    """One decoding step on one block: propose tokens for its masked positions, commit some.

    Holds the knobs that stay fixed during a run; :meth:`step` is called once per backbone call.
    """

    def __init__(self, layer=None, *, mask_id: int, remasking: str = "low_confidence", temperature: float = 1.0,
                 threshold: float | None = None, codd: str = "off", pc_frac: float | None = None,
                 generator: torch.Generator | None = None):
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

        Rows whose masked fraction is not below ``pc_frac`` use the factorized proposal.
        """
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
        probs = F.softmax(logits / self.temperature, dim=-1)                    # [B, L, V]
        return self._commit(probs, _draw(probs, self.greedy, self.generator), tokens, masked, count)

    def joint(self, logits, hidden, tokens, masked, count):
        dist = self.layer.distribution(logits, hidden, tokens, masked, temperature=self.layer_temperature)
        if self.greedy:
            proposal, probs = dist.map().assignment, dist.marginals(over_candidates=True)
        else:
            # one upward pass of the circuit (and its backward) gives both the joint sample and the marginals
            proposal, probs = dist.sample_with_marginals(generator=self.generator, over_candidates=True)
        # probs are over each position's candidates (every token without top-k: no [B, L, V] with it)
        return self._commit(probs, proposal, tokens, masked, count, chosen=dist.candidate_slot(proposal))

    def any_order(self, logits, hidden, tokens, masked, count):
        """Commit one position at a time, each from its exact conditional given the block so far.

        The next position is picked from the conditionals alone (for "low_confidence": the highest
        top-1 probability) before its token is drawn, so the committed tokens are an exact draw for
        every rule. One marginals query per committed position, over the candidates with top-k
        (O(L·k), no [B, L, V] tensor); the layer's ``sample_any_order`` would decode the whole block
        each step and throw most of it away.
        """
        tokens, masked = tokens.clone(), masked.clone()
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        budget = masked.sum(-1).clamp(max=count)                                 # [B]
        done = torch.zeros_like(budget)
        for _ in range(tokens.shape[1]):                                         # one position at a time
            owed = (done < budget) & masked.any(-1)                              # [B]
            if not masked.any() or (self.threshold is None and not owed.any()):
                break
            dist = self.layer.distribution(logits, hidden, tokens, masked, temperature=self.layer_temperature)
            # [B, L, k] conditionals over each position's candidates (k = V without top-k: every token)
            probs = dist.marginals(over_candidates=True)
            scores = confidence(self.rule, probs, probs.argmax(-1), self.generator).masked_fill(~masked, -math.inf)
            if self.threshold is not None:
                owed |= (scores > self.threshold).any(-1)
            owed &= masked.any(-1)
            if not owed.any():
                break
            pos = scores.argmax(-1)                                              # [B]
            token = self._draw_candidate(dist, probs[rows, pos], rows, pos)       # [B]
            tokens[rows[owed], pos[owed]] = token[owed]
            masked[rows[owed], pos[owed]] = False
            done += owed.long()
        return tokens

    def _draw_candidate(self, dist, probs, rows, pos):
        """A token for position ``pos`` [B] of each row from its conditional ``probs`` [B, k] over
        ``dist.candidate_ids``: a slot is drawn, then mapped to its token id. The slots are first put
        in token order, so that with k = V the same noise draws the same token as the dense mode."""
        if dist.top_k is None:
            return _draw(probs, self.greedy, self.generator)                     # slot = token id
        ids, order = dist.candidate_ids[rows, pos].sort(-1)                      # [B, k]
        slot = _draw(probs.gather(-1, order), self.greedy, self.generator)
        return ids.gather(-1, slot.unsqueeze(-1)).squeeze(-1)

    def _commit(self, probs, proposal, tokens, masked, count, chosen=None):
        """``chosen``: where each proposed token sits on probs' last axis (default: its id)."""
        scores = confidence(self.rule, probs, proposal if chosen is None else chosen, self.generator)
        pick = select_top(scores, masked, _step_count(count, scores, masked, self.threshold))
        return torch.where(pick, proposal, tokens)


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------

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
    codd          "off" (factorized), "joint" or "any_order"; see the module docstring
    pc_frac       use the circuit only while the block's masked fraction is below it
    generator     a torch.Generator (on the backbone's device) for reproducible runs
    batch_size    rows to generate when ``prompt`` is None (default 1)
    """
    x, prompt_length = _start(backbone, prompt, batch_size, gen_length)
    _check(backbone, layer, gen_length=gen_length, block_length=block_length, steps=steps, remasking=remasking,
           temperature=temperature, threshold=threshold, codd=codd, pc_frac=pc_frac, generator=generator)
    decoder = BlockDecoder(layer, mask_id=backbone.mask_id, remasking=remasking, temperature=temperature,
                           threshold=threshold, codd=codd, pc_frac=pc_frac, generator=generator)
    num_blocks = gen_length // block_length
    for block, block_steps in enumerate(split_evenly(steps, num_blocks)):
        lo = prompt_length + block * block_length
        hi = lo + block_length
        for count in split_evenly(block_length, block_steps):
            masked = x[:, lo:hi] == backbone.mask_id                             # [B, L]
            if not masked.any():                                                 # only with a threshold
                break
            out = backbone(x)
            x[:, lo:hi] = decoder.step(out.logits[:, lo:hi], out.hidden[:, lo:hi], x[:, lo:hi], masked, count)
    return x


def _start(backbone, prompt, batch_size, gen_length) -> tuple[torch.Tensor, int]:
    """The initial sequence: the prompt followed by ``gen_length`` mask ids."""
    if not isinstance(gen_length, int) or gen_length < 1:
        raise ValueError(f"gen_length must be a positive int, got {gen_length!r}")
    if prompt is None:
        rows = 1 if batch_size is None else batch_size
        if not isinstance(rows, int) or rows < 1:
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


def _check(backbone, layer, *, gen_length, block_length, steps, remasking, temperature, threshold, codd,
           pc_frac, generator) -> None:
    if not isinstance(block_length, int) or block_length < 1:
        raise ValueError(f"block_length must be a positive int, got {block_length!r}")
    if gen_length % block_length:
        raise ValueError(f"gen_length ({gen_length}) must be a multiple of block_length ({block_length})")
    if not isinstance(steps, int) or not 1 <= steps <= gen_length:
        raise ValueError(f"steps must be an int in [1, gen_length={gen_length}], got {steps!r}")
    if remasking not in REMASKING:
        raise ValueError(f"remasking must be one of {REMASKING}, got {remasking!r}")
    if not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if threshold is not None:
        if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be None or a number in [0, 1], got {threshold!r}")
        if remasking == "random":
            raise ValueError("threshold needs a confidence-based remasking rule, not 'random'")
    if codd not in CODD_MODES:
        raise ValueError(f"codd must be one of {CODD_MODES}, got {codd!r}")
    if pc_frac is not None:
        if codd == "off":
            raise ValueError("pc_frac gates the CoDD layer; it needs codd='joint' or 'any_order'")
        if not isinstance(pc_frac, (int, float)) or not 0 < pc_frac <= 1:
            raise ValueError(f"pc_frac must be None or a number in (0, 1], got {pc_frac!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if codd == "off":
        return
    if layer is None:
        raise ValueError(f"codd={codd!r} needs a CoDD layer (layer=...)")
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
