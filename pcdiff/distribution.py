"""The CoDD output distribution of one block: a product of experts between a circuit and a backbone.

For a block of L positions, given the backbone's logits at the noisy input x_t (some positions
decoded, the rest masked) and a compiled circuit C over the block,

    p̂(x_masked | x_t) ∝ C(x_block) · Π_{i masked} softmax(logits_i / T)(x_i),

with decoded positions clamped to their tokens. The backbone's log-probabilities enter the circuit
as soft evidence at the masked leaves, so one upward pass gives the normalizer Z, its gradient the
exact marginals, and a top-down walk exact joint samples (see :mod:`structures.queries`). With
``top_k`` each masked position keeps only its k most likely tokens and p̂ is exact on that support
(see :mod:`pcdiff.evidence`).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch.distributions import Categorical, Distribution, constraints

import structures

from .distribution_checks import check_arguments, check_force_include, check_value, temperature_tensor
from .evidence import candidate_evidence, check_top_k, soft_evidence

__all__ = ["CoDDBlockDistribution", "MapResult", "SampleWithMarginals", "soft_evidence"]

ORDER_RULES = ("confidence", "margin", "entropy", "random")


class MapResult(NamedTuple):
    """``assignment`` [B, L]; ``log_prob`` [B] its exact normalized log p̂; ``exact`` [B] bool,
    True where the assignment is the proven maximizer (found by enumeration)."""
    assignment: torch.Tensor
    log_prob: torch.Tensor
    exact: torch.Tensor


class SampleWithMarginals(NamedTuple):
    """``sample`` [*sample_shape, B, L] exact joint samples; ``marginals`` [B, L, V] the exact
    marginals (or [B, L, k] over :attr:`CoDDBlockDistribution.candidate_ids`)."""
    sample: torch.Tensor
    marginals: torch.Tensor


class CoDDBlockDistribution(Distribution):
    """p̂(x_masked | x_t) over one block, in the style of :mod:`torch.distributions`.

    Args:
        model: a :class:`structures.CompiledCircuit` over the block's L positions.
        logits: [B, L, V] float, the backbone's logits (V must equal the circuit's vocabulary).
            -inf bans a token.
        tokens: [B, L] long, the decoded tokens; entries at masked positions are ignored.
        masked: [B, L] bool, True = still masked (to be predicted). (The core's ``mask`` argument
            is the opposite: True = observed.)
        temperature: T > 0, a float or a [B] tensor; divides the logits (not the circuit).
        log_params, node_potentials: an adapter's output (see :mod:`pcdiff.adapters`), passed to
            every circuit query.
        validate_args: check every argument (and every ``log_prob`` value) up front.
        mask_id: the backbone's mask id; if it lies inside the vocabulary it is banned at masked
            positions (p̂ never predicts the mask) and rejected in ``log_prob``'s values.
        top_k: None (every token), or k in [1, V]: each masked position keeps its k most likely
            tokens and p̂ is exact on that support, renormalized (leaf cost L·H·k instead of L·H·V).
        force_include: [B, L] long, with ``top_k``: these tokens (e.g. the training targets x0) join
            the candidates of the masked positions, replacing the least likely where missing.

    ``batch_shape`` is [B], ``event_shape`` is [L]. Queries: :meth:`log_prob`, :meth:`marginals`,
    :meth:`sample`, :meth:`sample_with_marginals`, :meth:`sample_any_order`, :meth:`mode` /
    :meth:`map`, :meth:`factorized`; :attr:`log_normalizer` is computed lazily. A block with Z = 0
    raises ValueError.
    """

    arg_constraints: dict = {}   # checked by hand: the constraints couple shapes across arguments

    def __init__(self, model, logits, tokens, masked, temperature=1.0, log_params=None, node_potentials=None,
                 validate_args=True, mask_id: int | None = None, top_k: int | None = None,
                 force_include: torch.Tensor | None = None):
        if validate_args:
            check_arguments(model, logits, tokens, masked, mask_id)
        self.top_k = check_top_k(top_k, model.vocab_size)
        if force_include is not None:
            check_force_include(force_include, masked, self.top_k, model.vocab_size)
        device, dtype = model.device, model.dtype
        batch, length = tokens.shape
        self.model = model
        self.logits = logits.to(device)
        self.masked = masked.to(device)
        self.given_tokens = tokens.to(device)
        self.tokens = torch.where(self.masked, torch.zeros_like(self.given_tokens), self.given_tokens)  # 0 at masked
        self.temperature = temperature_tensor(temperature, batch, device, dtype, validate_args)
        self.mask_id = mask_id
        self.log_params = log_params
        self.node_potentials = node_potentials
        if self.top_k is None:
            self.evidence = soft_evidence(self.logits.to(dtype), self.masked, self.temperature, mask_id)  # [B, L, V]
        else:                                                                                   # [B, L, k]
            self.evidence = candidate_evidence(self.logits.to(dtype), self.tokens, self.masked, self.temperature,
                                               self.top_k, mask_id, None if force_include is None
                                               else force_include.to(device).long())
        self._log_z: torch.Tensor | None = None
        self._shared_log_params: structures.LogParams | None = None
        super().__init__(torch.Size([batch]), torch.Size([length]), validate_args=False)
        self._validate_args = validate_args

    # ------------------------------------------------------------------ basics
    @property
    def support(self):
        return constraints.integer_interval(0, self.model.vocab_size - 1)

    @property
    def candidate_ids(self) -> torch.Tensor:
        """[B, L, k] the tokens each position may take (k = V without ``top_k``: every token); the
        ``over_candidates`` marginals are aligned with it. At decoded positions slot 0 holds the token."""
        if self.top_k is not None:
            return self.evidence.ids
        vocab = torch.arange(self.model.vocab_size, device=self.tokens.device)
        return vocab.expand(*self.tokens.shape, -1)

    def candidate_slot(self, value: torch.Tensor) -> torch.Tensor:
        """[..., B, L] where each token of ``value`` [..., B, L] (within the candidates, e.g. a sample)
        sits in :attr:`candidate_ids`: the token itself without ``top_k``."""
        if self.top_k is None:
            return value
        return (value.unsqueeze(-1) == self.evidence.ids).long().argmax(-1)

    def _over_vocab(self, probs: torch.Tensor, over_candidates: bool) -> torch.Tensor:
        """Marginals from the core ([B, L, V], or [B, L, k] with top-k) as the caller asked for them."""
        if self.top_k is None or over_candidates:
            return probs
        return self.evidence.scatter(probs, self.model.vocab_size)

    @property
    def num_masked(self) -> torch.Tensor:
        """[B] number of masked positions per block."""
        return self.masked.sum(-1)

    def _query_args(self, rows: torch.Tensor | None = None, detach: bool = False) -> dict:
        """Keyword arguments for the core's queries, optionally gathered to batch ``rows``."""
        np_, lp = self.node_potentials, self.log_params
        if lp is None and not detach and torch.is_grad_enabled() and \
                any(p.requires_grad for p in self.model.parameters()):
            # Training: log Z and the score of x0 share one normalization of the tables (the [K, V]
            # emission log-softmax dominates at large V) instead of each query redoing it. Without
            # gradients the module's own inference cache already serves every query.
            if self._shared_log_params is None:
                self._shared_log_params = self.model.log_params()
            lp = self._shared_log_params
        if rows is not None:
            np_ = None if np_ is None else np_[rows]
            lp = None if lp is None else structures.LogParams([t[rows] if t.dim() == 3 else t for t in lp.sums],
                                                              lp.inputs)
        if detach:
            np_ = None if np_ is None else np_.detach()
            lp = None if lp is None else structures.LogParams([t.detach() for t in lp.sums],
                                                              [t.detach() for t in lp.inputs])
        return {"node_potentials": np_, "log_params": lp}

    @property
    def log_normalizer(self) -> torch.Tensor:
        """[B] log Z = log Σ_{x_masked} C(x) · Π_{i masked} q_i(x_i). Raises if some Z is 0."""
        stale = self._log_z is None or (torch.is_grad_enabled() and not self._log_z.requires_grad)
        if stale:
            log_z = self.model.log_prob(self.tokens, ~self.masked, self.evidence, **self._query_args())
            _raise_if_impossible(log_z)
            self._log_z = log_z
        return self._log_z

    def _require_possible(self) -> None:
        if self._log_z is None:
            with torch.no_grad():
                self.log_normalizer

    def _score(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """log C(x) + Σ_masked e(x_i) of full assignments x [N, L] taken with batch rows ``rows`` [N]."""
        observed = torch.ones_like(x, dtype=torch.bool)
        return self.model.log_prob(x, observed, self.evidence[rows], **self._query_args(rows))

    # ------------------------------------------------------------------ queries
    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Exact normalized log p̂ of ``value`` [..., B, L] (a completion of the block): [..., B].

        Differentiable w.r.t. the logits, the circuit's parameters and the adapter's output.
        """
        value = torch.as_tensor(value, device=self.tokens.device)
        if self._validate_args:
            self._check_value(value)
        sample_shape = value.shape[:-2]
        flat = value.reshape(-1, *self.event_shape).long()                  # [S·B, L]
        rows = torch.arange(self.batch_shape[0], device=flat.device).repeat(flat.shape[0] // self.batch_shape[0])
        score = self._score(flat, rows).reshape(*sample_shape, *self.batch_shape)
        return score - self.log_normalizer

    def marginals(self, over_candidates: bool = False) -> torch.Tensor:
        """[B, L, V] exact marginals of p̂ (one-hot at decoded positions); with ``over_candidates``
        [B, L, k], the probability of each of :attr:`candidate_ids` (no [B, L, V] tensor with top-k)."""
        self._require_possible()
        with torch.no_grad():
            probs = self.model.marginals(self.tokens, ~self.masked, self.evidence.detach(),
                                         **self._query_args(detach=True))
        return self._over_vocab(probs, over_candidates)

    def sample_with_marginals(self, sample_shape=torch.Size(), generator: torch.Generator | None = None,
                              over_candidates: bool = False) -> SampleWithMarginals:
        """:meth:`sample` and :meth:`marginals` together, from one upward pass of the circuit (and
        its backward) instead of three: the core's ``sample_and_marginals``."""
        if isinstance(sample_shape, torch.Generator):
            sample_shape, generator = torch.Size(), sample_shape
        sample_shape = torch.Size(sample_shape)
        n = sample_shape.numel()
        with torch.no_grad():
            out = self.model.sample_and_marginals(self.tokens, ~self.masked, self.evidence.detach(), num_samples=n,
                                                  generator=generator, **self._query_args(detach=True))
        if self._log_z is None:
            self._log_z = out.log_normalizer                  # no gradient: recomputed if one is needed
        sample = out.sample.reshape(*sample_shape, *self.batch_shape, *self.event_shape)
        return SampleWithMarginals(sample, self._over_vocab(out.marginals, over_candidates))

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact joint samples of every masked position: [*sample_shape, B, L] (decoded positions kept).

        ``sample(generator)`` (a Generator in the first slot) is accepted as well.
        """
        if isinstance(sample_shape, torch.Generator):
            sample_shape, generator = torch.Size(), sample_shape
        sample_shape = torch.Size(sample_shape)
        self._require_possible()
        n = sample_shape.numel()
        with torch.no_grad():
            out = self.model.sample(self.tokens, ~self.masked, self.evidence.detach(), num_samples=n,
                                    generator=generator, **self._query_args(detach=True))
        return out.reshape(*sample_shape, *self.batch_shape, *self.event_shape)

    def sample_any_order(self, order: str | torch.Tensor = "confidence", generator: torch.Generator | None = None,
                         return_order: bool = False, num_positions: int | None = None):
        """An exact joint sample drawn one position at a time, each from its exact conditional.

        ``order`` is a rule choosing the next masked position from the current marginals —
        "confidence" (highest max-marginal first), "margin" (largest top-1 minus top-2 gap),
        "entropy" (lowest entropy first), "random" — or a [B, L] tensor whose row b is a
        permutation of 0..L-1 (decoded positions in it are skipped). Any order gives a draw from
        p̂ (chain rule), the order only changes which choices are made first. Costs one marginals
        query per step. ``num_positions`` stops after that many positions per row (a partial
        decode: the others keep their input tokens). Returns [B, L], and with ``return_order`` the
        step at which each position was drawn [B, L] (-1 where not drawn).
        """
        self._require_possible()
        rank = self._order_ranks(order)
        x, fixed = self.given_tokens.clone(), ~self.masked
        step_of = torch.full_like(x, -1)
        rows = torch.arange(x.shape[0], device=x.device)
        for step in range(min(int(self.num_masked.max()), num_positions or self.event_shape[0])):
            with torch.no_grad():
                marg = self.model.marginals(x, fixed, self.evidence.detach(), **self._query_args(detach=True))
            active = ~fixed.all(-1)                                          # [B] rows with work left
            score = -rank if rank is not None else _order_score(order, marg, generator)
            pos = score.masked_fill(fixed, float("-inf")).argmax(-1)          # [B]
            probs = marg[rows, pos].clamp_min(0)                              # [B, V] (or [B, k]: candidates)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            if self.top_k is not None:
                token = self.evidence.ids[rows, pos].gather(-1, token.unsqueeze(-1)).squeeze(-1)
            x[rows[active], pos[active]] = token[active]
            step_of[rows[active], pos[active]] = step
            fixed = fixed.clone()
            fixed[rows[active], pos[active]] = True
        return (x, step_of) if return_order else x

    def _order_ranks(self, order) -> torch.Tensor | None:
        if isinstance(order, str):
            if order not in ORDER_RULES:
                raise ValueError(f"order must be one of {ORDER_RULES} or a [B, L] permutation tensor, got {order!r}")
            return None
        order = torch.as_tensor(order, device=self.tokens.device)
        if order.shape != self.tokens.shape or order.is_floating_point():
            raise ValueError(f"order must be an integer tensor of shape {tuple(self.tokens.shape)}, "
                             f"got {order.dtype} {tuple(order.shape)}")
        length = self.event_shape[0]
        if not torch.equal(order.sort(-1).values, torch.arange(length, device=order.device).expand_as(order)):
            raise ValueError(f"order: every row must be a permutation of 0..{length - 1}")
        rank = torch.empty_like(order)
        rank.scatter_(1, order.long(), torch.arange(length, device=order.device).expand_as(order))
        return rank.to(self.evidence.dtype)                                   # rank[b, i]: when i comes

    def map(self, exact_limit: int = 4096) -> MapResult:
        """The most probable completion of the masked positions.

        Rows with at most ``exact_limit`` completions (V ** num_masked) are enumerated: exact. The
        others use the core's max-product pass, which is exact for circuits without latent sums
        (or deterministic ones) and otherwise maximizes over tokens *and* latent states jointly
        (Viterbi for an HMM): an approximation of the token MAP, flagged by ``exact`` False. With
        ``top_k`` only the candidates count (k ** num_masked completions).
        """
        self._require_possible()
        choices = float(self.top_k or self.model.vocab_size)
        small = choices ** self.num_masked.double() <= exact_limit                          # [B]
        with torch.no_grad():
            x = self.tokens.clone()
            if not bool(small.all()):
                x, _ = self.model.map(self.tokens, ~self.masked, self.evidence, **self._query_args(detach=True))
            if bool(small.any()):
                rows = small.nonzero().flatten()
                x[rows] = self._enumerate_best(rows)
            log_prob = self._score(x, torch.arange(x.shape[0], device=x.device)) - self.log_normalizer
        return MapResult(x, log_prob, small)

    def mode(self) -> torch.Tensor:
        """[B, L] the assignment of :meth:`map` (a method, unlike torch's ``mode`` property,
        because it runs a query)."""
        return self.map().assignment

    def _enumerate_best(self, rows: torch.Tensor) -> torch.Tensor:
        """[len(rows), L] the best completion of each of ``rows``, by scoring every completion at once."""
        device = rows.device
        candidates, owner = [], []
        for j, b in enumerate(rows.tolist()):
            positions = self.masked[b].nonzero().flatten()
            ids = self.candidate_ids[b, positions]                            # [m, k]
            k = ids.shape[-1]
            codes = torch.arange(k ** len(positions), device=device)
            digits = (codes.unsqueeze(-1) // k ** torch.arange(len(positions), device=device)) % k
            x = self.tokens[b].expand(len(codes), -1).clone()
            x[:, positions] = ids[torch.arange(len(positions), device=device), digits]          # [k^m, L]
            candidates.append(x)
            owner.append(torch.full((len(x),), j, device=device))
        x, owner = torch.cat(candidates), torch.cat(owner)
        valid = (x < torch.tensor(self.model.vocab_sizes, device=device)).all(-1)    # within each position's vocab
        x, owner = x[valid], owner[valid]
        score = self._score(x, rows[owner])
        return torch.stack([x[owner == j][score[owner == j].argmax()] for j in range(len(rows))])

    def factorized(self) -> Categorical:
        """The plain backbone distribution: Categorical over [B, L, V] of softmax(logits / T)."""
        return Categorical(logits=self.logits.to(self.evidence.dtype) / self.temperature.reshape(-1, 1, 1))

    # ------------------------------------------------------------------ checks
    def _check_value(self, value: torch.Tensor) -> None:
        check_value(value, self.tokens, self.masked, self.model.vocab_size, self.mask_id,
                    self.evidence.ids if self.top_k is not None else None)

    def __repr__(self) -> str:
        return (f"CoDDBlockDistribution(batch={self.batch_shape[0]}, block_length={self.event_shape[0]}, "
                f"vocab={self.model.vocab_size}, masked={int(self.masked.sum())}"
                + (f", top_k={self.top_k})" if self.top_k is not None else ")"))


def _order_score(rule: str, marg: torch.Tensor, generator) -> torch.Tensor:
    """[B, L] priority of each position under a confidence rule (higher = decoded sooner)."""
    if rule == "confidence":
        return marg.amax(-1)
    if rule == "margin":
        top = marg.topk(min(2, marg.shape[-1]), dim=-1).values
        return top[..., 0] - (top[..., 1] if top.shape[-1] > 1 else 0)
    if rule == "entropy":
        return (marg * torch.log(marg.clamp_min(torch.finfo(marg.dtype).tiny))).sum(-1)
    return torch.rand(marg.shape[:2], generator=generator, device=marg.device, dtype=marg.dtype)


def _raise_if_impossible(log_z: torch.Tensor) -> None:
    bad = torch.isneginf(log_z) | torch.isnan(log_z)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(f"CoDDBlockDistribution: the block has probability zero in batch row(s) {rows[:10]}: "
                         "no completion of the masked positions is possible under the circuit and the backbone "
                         "(e.g. every candidate token banned, or decoded tokens the circuit forbids)")
