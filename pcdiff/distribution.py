"""The CoDD output distribution of one block: a product of experts between a circuit and a backbone.

For a block of L positions, given the backbone's logits at the noisy input x_t (some positions
decoded, the rest masked) and a compiled circuit C over the block,

    p̂(x_masked | x_t) ∝ C(x_block) · Π_{i masked} softmax(logits_i / T)(x_i),

with decoded positions clamped to their tokens. The backbone's log-probabilities enter the circuit
as soft evidence at the masked leaves, so one upward pass gives the normalizer Z, its gradient the
exact marginals, and a top-down walk exact joint samples (see :mod:`structures.queries`).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch.distributions import Categorical, Distribution, constraints

import structures

__all__ = ["CoDDBlockDistribution", "MapResult", "soft_evidence"]

ORDER_RULES = ("confidence", "margin", "entropy", "random")


class MapResult(NamedTuple):
    """``assignment`` [B, L]; ``log_prob`` [B] its exact normalized log p̂; ``exact`` [B] bool,
    True where the assignment is the proven maximizer (found by enumeration)."""
    assignment: torch.Tensor
    log_prob: torch.Tensor
    exact: torch.Tensor


def soft_evidence(logits: torch.Tensor, masked: torch.Tensor, temperature: torch.Tensor,
                  banned: int | None = None) -> torch.Tensor:
    """log_softmax(logits / T) at masked positions (-inf at token ``banned``), 0 at decoded ones: [B, L, V].

    A masked row whose logits are all -inf stays all -inf (an impossible block, reported by the
    caller) instead of turning into NaN; decoded rows are zeroed *before* the softmax so that
    whatever they hold cannot leak NaN into gradients.
    """
    keep = masked.unsqueeze(-1)                                              # [B, L, 1]
    z = torch.where(keep, logits / temperature.reshape(-1, 1, 1), torch.zeros_like(logits))
    dead = torch.isneginf(z).all(dim=-1, keepdim=True)                      # [B, L, 1]
    e = torch.log_softmax(torch.where(dead, torch.zeros_like(z), z), dim=-1)
    e = torch.where(dead, torch.full_like(e, float("-inf")), e)
    if banned is not None and 0 <= banned < e.shape[-1]:
        e = torch.where(keep, e.index_fill(-1, torch.tensor([banned], device=e.device), float("-inf")), e)
    return e


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

    ``batch_shape`` is [B], ``event_shape`` is [L]. Queries: :meth:`log_prob`, :meth:`marginals`,
    :meth:`sample`, :meth:`sample_any_order`, :meth:`mode` / :meth:`map`, :meth:`factorized`;
    :attr:`log_normalizer` is computed lazily. A block with Z = 0 raises ValueError.
    """

    arg_constraints: dict = {}   # checked by hand: the constraints couple shapes across arguments

    def __init__(self, model, logits, tokens, masked, temperature=1.0, log_params=None, node_potentials=None,
                 validate_args=True, mask_id: int | None = None):
        if validate_args:
            _check_arguments(model, logits, tokens, masked, mask_id)
        device, dtype = model.device, model.dtype
        batch, length = tokens.shape
        self.model = model
        self.logits = logits.to(device)
        self.masked = masked.to(device)
        self.given_tokens = tokens.to(device)
        self.tokens = torch.where(self.masked, torch.zeros_like(self.given_tokens), self.given_tokens)  # 0 at masked
        self.temperature = _temperature(temperature, batch, device, dtype, validate_args)
        self.mask_id = mask_id
        self.log_params = log_params
        self.node_potentials = node_potentials
        self.evidence = soft_evidence(self.logits.to(dtype), self.masked, self.temperature, mask_id)   # [B, L, V]
        self._log_z: torch.Tensor | None = None
        super().__init__(torch.Size([batch]), torch.Size([length]), validate_args=False)
        self._validate_args = validate_args

    # ------------------------------------------------------------------ basics
    @property
    def support(self):
        return constraints.integer_interval(0, self.model.vocab_size - 1)

    @property
    def num_masked(self) -> torch.Tensor:
        """[B] number of masked positions per block."""
        return self.masked.sum(-1)

    def _query_args(self, rows: torch.Tensor | None = None, detach: bool = False) -> dict:
        """Keyword arguments for the core's queries, optionally gathered to batch ``rows``."""
        np_, lp = self.node_potentials, self.log_params
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

    def marginals(self) -> torch.Tensor:
        """[B, L, V] exact marginals of p̂ (one-hot at decoded positions)."""
        self._require_possible()
        with torch.no_grad():
            return self.model.marginals(self.tokens, ~self.masked, self.evidence.detach(),
                                        **self._query_args(detach=True))

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
            probs = marg[rows, pos].clamp_min(0)                              # [B, V]
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
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
        (Viterbi for an HMM): an approximation of the token MAP, flagged by ``exact`` False.
        """
        self._require_possible()
        small = float(self.model.vocab_size) ** self.num_masked.double() <= exact_limit     # [B]
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
        vocab, device = self.model.vocab_size, rows.device
        candidates, owner = [], []
        for j, b in enumerate(rows.tolist()):
            positions = self.masked[b].nonzero().flatten()
            codes = torch.arange(vocab ** len(positions), device=device)
            digits = (codes.unsqueeze(-1) // vocab ** torch.arange(len(positions), device=device)) % vocab
            x = self.tokens[b].expand(len(codes), -1).clone()
            x[:, positions] = digits                                          # [V^m, L]
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
        if value.is_floating_point() or value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"log_prob: value must be an integer tensor of token ids, got dtype {value.dtype}")
        if value.dim() < 2 or value.shape[-2:] != self.tokens.shape:
            raise ValueError(f"log_prob: value must have shape [..., {', '.join(map(str, self.tokens.shape))}], "
                             f"got {tuple(value.shape)}")
        vocab = self.model.vocab_size
        if self.mask_id is not None and bool((self.masked & (value == self.mask_id)).any()):
            raise ValueError(f"log_prob: value holds the mask id {self.mask_id} at a masked position; "
                             "it must be a completion of the block")
        if bool(((value < 0) | (value >= vocab)).any()):
            raise ValueError(f"log_prob: value has token ids outside [0, {vocab})")
        if bool((~self.masked & (value != self.tokens)).any()):
            raise ValueError("log_prob: value differs from tokens at a decoded (unmasked) position")

    def __repr__(self) -> str:
        return (f"CoDDBlockDistribution(batch={self.batch_shape[0]}, block_length={self.event_shape[0]}, "
                f"vocab={self.model.vocab_size}, masked={int(self.masked.sum())})")


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


def _temperature(temperature, batch: int, device, dtype, validate: bool) -> torch.Tensor:
    t = torch.as_tensor(temperature, device=device, dtype=dtype)
    if t.dim() == 0:
        t = t.expand(batch)
    if validate:
        if t.shape != (batch,):
            raise ValueError(f"temperature must be a float or a [{batch}] tensor, got shape {tuple(t.shape)}")
        if not bool((torch.isfinite(t) & (t > 0)).all()):
            raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    return t


def _check_arguments(model, logits, tokens, masked, mask_id) -> None:
    if not isinstance(model, structures.CompiledCircuit):
        raise TypeError(f"model must be a structures.CompiledCircuit, got {type(model).__name__}")
    length, vocab = model.num_vars, model.vocab_size
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a float tensor [B, L, V], got {getattr(logits, 'dtype', type(logits))}")
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape [B, L, V], got {tuple(logits.shape)}")
    if logits.shape[1] != length:
        raise ValueError(f"logits cover {logits.shape[1]} positions but the circuit's block length is {length}")
    if logits.shape[2] != vocab:
        raise ValueError(f"vocabulary mismatch: the backbone's logits have V = {logits.shape[2]} but the circuit's "
                         f"vocabulary is {vocab}")
    if bool(torch.isnan(logits).any()) or bool((logits == float("inf")).any()):
        raise ValueError("logits contain NaN or +inf (use -inf to ban a token)")
    if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must be an integer tensor [B, L], got {getattr(tokens, 'dtype', type(tokens))}")
    if tokens.shape != logits.shape[:2]:
        raise ValueError(f"tokens must have shape {tuple(logits.shape[:2])} (logits' [B, L]), "
                         f"got {tuple(tokens.shape)}")
    if not isinstance(masked, torch.Tensor) or masked.dtype != torch.bool:
        raise TypeError(f"masked must be a bool tensor [B, L] (True = masked), "
                        f"got {getattr(masked, 'dtype', type(masked))}")
    if masked.shape != tokens.shape:
        raise ValueError(f"masked must have shape {tuple(tokens.shape)}, got {tuple(masked.shape)}")
    limits = torch.tensor(model.vocab_sizes, device=tokens.device)
    bad = ~masked & ((tokens < 0) | (tokens >= limits))
    if bool(bad.any()):
        b, i = (int(v) for v in bad.nonzero()[0])
        hint = " (the mask id at a position marked decoded?)" if int(tokens[b, i]) == mask_id else ""
        raise ValueError(f"tokens[{b}, {i}] = {int(tokens[b, i])} is a decoded token out of range for position {i} "
                         f"(vocab {model.vocab_sizes[i]}){hint}")
    if mask_id is not None and 0 <= mask_id < vocab and bool((~masked & (tokens == mask_id)).any()):
        raise ValueError(f"tokens hold the mask id {mask_id} at a position marked decoded (masked False)")
