"""The CoDD output distribution of one block: a product of experts between a circuit and a backbone.

For a block of L positions, given the backbone's logits at the noisy input x_t (some positions
decided, the rest still to predict) and a compiled circuit C over the block,

    p̂(x_masked | x_t) ∝ C(x_block) · Π_{i masked} softmax(logits_i / T)(x_i),

with decided positions clamped to their tokens. The backbone's log-probabilities enter the circuit
as soft evidence at the masked leaves, so one upward pass gives the normalizer Z, its gradient the
exact marginals, and a top-down walk exact joint samples (see :mod:`structures.queries`). With
``top_k`` each masked position keeps only its k most likely tokens and p̂ is exact on that support
(see :mod:`pcdiff.codd.evidence`).

Polarity: ``masked`` is True at the positions p̂ predicts (the diffusion side's word, whatever the
backbone's noise); the circuit is asked with ``observed = ~masked``, computed once here.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch.distributions import Categorical, Distribution, constraints

import structures

from . import any_order, dependence, mode
from .checks import (check_arguments, check_force_include, check_node_potentials, check_value, raise_if_impossible,
                     temperature_tensor)
from .evidence import candidate_evidence, check_top_k, soft_evidence

__all__ = ["CoDDBlockDistribution", "SampleWithMarginals"]


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
        tokens: [B, L] long, the decided tokens; entries at masked positions are ignored (the mask
            id, or any token of a uniform-noise backbone).
        masked: [B, L] bool, True = still to be predicted (to decide), whatever the backbone's noise.
        temperature: T > 0, a float or a [B] tensor; divides the logits (not the circuit).
        backbone_weight: β > 0, a float or a [B] tensor: the exponent on the backbone's per-token
            distributions in the product, p̂ ∝ C · Π_i q_i^β (an adapter's learned trust in the
            backbone; 1 = the paper's product). Equal to dividing T by β; :meth:`factorized` ignores it.
        log_params, node_potentials: an adapter's output (see :mod:`pcdiff.codd.adapters`), passed to
            every circuit query.
        validate_args: check every argument once, here (and every ``log_prob`` value); the
            circuit's queries then run without checking again.
        mask_id: a masked backbone's mask id (None: none, e.g. uniform noise); if it lies inside the
            vocabulary it is banned at masked positions (p̂ never predicts the mask) and rejected in
            ``log_prob``'s values.
        top_k: None (every token), or k in [1, V]: each masked position keeps its k most likely
            tokens and p̂ is exact on that support, renormalized (leaf cost L·H·k instead of L·H·V).
        force_include: [B, L] long, with ``top_k``: these tokens (e.g. the training targets x0) join
            the candidates of the masked positions, replacing the least likely where missing.
        dependence_only: divide the circuit's own one-position conditionals out of the product, so
            the circuit couples the masked positions without changing any one alone (with one
            masked, p̂ is the backbone's; see :mod:`pcdiff.codd.dependence`).

    ``batch_shape`` is [B], ``event_shape`` is [L]. Queries: :meth:`log_prob`, :meth:`marginals`,
    :meth:`sample`, :meth:`sample_with_marginals`, :meth:`sample_any_order`, :meth:`map` /
    :meth:`mode`, :meth:`factorized`; :attr:`log_normalizer` is computed lazily. A block with Z = 0
    raises ValueError.
    """

    arg_constraints: dict = {}   # checked by hand: the constraints couple shapes across arguments

    def __init__(self, model, logits, tokens, masked, temperature=1.0, log_params=None, node_potentials=None,
                 validate_args=True, mask_id: int | None = None, top_k: int | None = None,
                 force_include: torch.Tensor | None = None, backbone_weight=1.0, dependence_only: bool = False):
        if validate_args:
            check_arguments(model, logits, tokens, masked, mask_id)
            check_node_potentials(model, node_potentials, tokens.shape[0])
        self.top_k = check_top_k(top_k, model.vocab_size)
        if force_include is not None:
            check_force_include(force_include, masked, self.top_k, model.vocab_size)
        device, dtype = model.device, model.dtype
        batch, length = tokens.shape
        self.model = model
        self.logits = logits.to(device)
        self.masked = masked.to(device)
        self.observed = ~self.masked                                          # the circuit's polarity
        self.given_tokens = tokens.to(device)
        self.tokens = torch.where(self.masked, torch.zeros_like(self.given_tokens), self.given_tokens)  # 0 at masked
        self.temperature = temperature_tensor(temperature, batch, device, dtype, validate_args)
        self.backbone_weight = temperature_tensor(backbone_weight, batch, device, dtype, validate_args,
                                                  name="backbone_weight")
        # q^β renormalized per position is softmax(logits · β / T): the leaves see T / β
        evidence_temperature = self.temperature / self.backbone_weight
        self.mask_id = mask_id
        self.log_params = log_params
        self.node_potentials = node_potentials
        if self.top_k is None:                                                                  # [B, L, V]
            self.evidence = soft_evidence(self.logits.to(dtype), self.masked, evidence_temperature, mask_id)
        else:                                                                                   # [B, L, k]
            self.evidence = candidate_evidence(self.logits.to(dtype), self.tokens, self.masked, evidence_temperature,
                                               self.top_k, mask_id, None if force_include is None
                                               else force_include.to(device).long())
        self._log_z: torch.Tensor | None = None
        self._shared_log_params: structures.LogParams | None = None
        if not isinstance(dependence_only, bool):
            raise TypeError(f"dependence_only must be a bool, got {type(dependence_only).__name__}")
        self.dependence_only = dependence_only
        if dependence_only:
            log_cond = dependence.circuit_log_conditionals(model, self.tokens, self.observed, node_potentials,
                                                           self._training_log_params())
            self.evidence = dependence.divide_conditionals(self.evidence, log_cond)
        self._inference: tuple[structures.Evidence, structures.LogParams | None] | None = None
        super().__init__(torch.Size([batch]), torch.Size([length]), validate_args=False)
        self._validate_args = validate_args

    # ------------------------------------------------------------------ basics
    @property
    def support(self):
        return constraints.integer_interval(0, self.model.vocab_size - 1)

    @property
    def candidate_ids(self) -> torch.Tensor:
        """[B, L, k] the tokens each position may take (k = V without ``top_k``: every token); the
        ``over_candidates`` marginals are aligned with it. At decided positions slot 0 holds the token."""
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

    # ------------------------------------------------------------------ the circuit's arguments
    def _circuit_evidence(self, tokens, observed, potentials, node_potentials) -> structures.Evidence:
        """The core's Evidence, built directly: every part was checked when this object was made."""
        dense = self.top_k is None
        return structures.Evidence(tokens, observed, soft=potentials if dense else None,
                                   node_potentials=node_potentials, candidates=None if dense else potentials)

    def _training_log_params(self) -> structures.LogParams | None:
        """The parameters of a differentiable query: the adapter's, or the circuit's own computed once
        for this block (log Z and the score of x0 then share one normalization of the [K, V] tables
        instead of each query redoing it; without gradients the circuit's inference cache serves)."""
        if self.log_params is not None or not torch.is_grad_enabled() \
                or not any(p.requires_grad for p in self.model.parameters()):
            return self.log_params
        if self._shared_log_params is None:
            self._shared_log_params = self.model.log_params()
        return self._shared_log_params

    def inference_args(self) -> tuple[structures.Evidence, structures.LogParams | None]:
        """(the block's Evidence, log_params), detached: what every no-gradient query of the circuit
        takes (the any-order sampler updates the Evidence's tokens and observed positions)."""
        if self._inference is None:
            potentials = self.evidence.detach()
            node_potentials = None if self.node_potentials is None else self.node_potentials.detach()
            lp = None if self.log_params is None else self.log_params.detach()
            self._inference = (self._circuit_evidence(self.tokens, self.observed, potentials, node_potentials), lp)
        return self._inference

    @property
    def log_normalizer(self) -> torch.Tensor:
        """[B] log Z = log Σ_{x_masked} C(x) · Π_{i masked} q_i(x_i). Raises if some Z is 0."""
        stale = self._log_z is None or (torch.is_grad_enabled() and not self._log_z.requires_grad)
        if stale:
            evidence = self._circuit_evidence(self.tokens, self.observed, self.evidence, self.node_potentials)
            log_z = self.model.log_prob(evidence, log_params=self._training_log_params())
            raise_if_impossible(log_z)
            self._log_z = log_z
        return self._log_z

    def require_possible(self) -> None:
        """Raise ValueError if the block has probability zero (computes log Z once, without gradient)."""
        if self._log_z is None:
            with torch.no_grad():
                self.log_normalizer

    def score(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """log C(x) + Σ_masked e(x_i) of full assignments x [N, L] taken with batch rows ``rows`` [N]:
        the unnormalized log p̂."""
        lp = self._training_log_params()
        node_potentials = None if self.node_potentials is None else self.node_potentials[rows]
        evidence = self._circuit_evidence(x, torch.ones_like(x, dtype=torch.bool), self.evidence[rows],
                                          node_potentials)
        return self.model.log_prob(evidence, log_params=None if lp is None else lp.rows(rows))

    # ------------------------------------------------------------------ queries
    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Exact normalized log p̂ of ``value`` [..., B, L] (a completion of the block): [..., B].

        Differentiable w.r.t. the logits, the circuit's parameters and the adapter's output.
        """
        value = torch.as_tensor(value, device=self.tokens.device)
        if self._validate_args:
            check_value(value, self.tokens, self.masked, self.model.vocab_size, self.mask_id,
                        self.evidence.ids if self.top_k is not None else None)
        sample_shape = value.shape[:-2]
        flat = value.reshape(-1, *self.event_shape).long()                  # [S·B, L]
        rows = torch.arange(self.batch_shape[0], device=flat.device).repeat(flat.shape[0] // self.batch_shape[0])
        return self.score(flat, rows).reshape(*sample_shape, *self.batch_shape) - self.log_normalizer

    def marginals(self, over_candidates: bool = False) -> torch.Tensor:
        """[B, L, V] exact marginals of p̂ (one-hot at decided positions); with ``over_candidates``
        [B, L, k], the probability of each of :attr:`candidate_ids` (no [B, L, V] tensor with top-k)."""
        self.require_possible()
        evidence, log_params = self.inference_args()
        with torch.no_grad():
            probs = self.model.marginals(evidence, log_params=log_params)
        return self._over_vocab(probs, over_candidates)

    def sample_with_marginals(self, sample_shape=torch.Size(), generator: torch.Generator | None = None,
                              over_candidates: bool = False) -> SampleWithMarginals:
        """:meth:`sample` and :meth:`marginals` together, from one upward pass of the circuit (and
        its backward) instead of three: the core's ``sample_and_marginals``."""
        sample_shape, generator = _sample_arguments(sample_shape, generator)
        evidence, log_params = self.inference_args()
        with torch.no_grad():
            out = self.model.sample_and_marginals(evidence, num_samples=sample_shape.numel(), generator=generator,
                                                  log_params=log_params)
        if self._log_z is None:
            self._log_z = out.log_normalizer                  # no gradient: recomputed if one is needed
        sample = out.sample.reshape(*sample_shape, *self.batch_shape, *self.event_shape)
        return SampleWithMarginals(sample, self._over_vocab(out.marginals, over_candidates))

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact joint samples of every masked position: [*sample_shape, B, L] (decided positions kept).

        ``sample(generator)`` (a Generator in the first slot) is accepted as well.
        """
        sample_shape, generator = _sample_arguments(sample_shape, generator)
        self.require_possible()
        evidence, log_params = self.inference_args()
        with torch.no_grad():
            out = self.model.sample(evidence, num_samples=sample_shape.numel(), generator=generator,
                                    log_params=log_params)
        return out.reshape(*sample_shape, *self.batch_shape, *self.event_shape)

    def sample_any_order(self, order: str | torch.Tensor = "low_confidence", generator: torch.Generator | None = None,
                         *, budget: int | torch.Tensor | None = None, threshold: float | None = None,
                         greedy: bool = False, return_order: bool = False):
        """An exact joint sample drawn one position at a time, each from its exact conditional given
        the positions drawn before it. See :func:`pcdiff.codd.any_order.sample_any_order`."""
        return any_order.sample_any_order(self, order, generator, budget=budget, threshold=threshold,
                                          greedy=greedy, return_order=return_order)

    def map(self, exact_limit: int = 4096) -> mode.MapResult:
        """The most probable completion of the masked positions (see :func:`pcdiff.codd.mode.map_completion`)."""
        return mode.map_completion(self, exact_limit)

    def mode(self) -> torch.Tensor:
        """[B, L] the assignment of :meth:`map` (a method, unlike torch's ``mode`` property,
        because it runs a query)."""
        return self.map().assignment

    def factorized(self) -> Categorical:
        """The plain backbone distribution: Categorical over [B, L, V] of softmax(logits / T)."""
        return Categorical(logits=self.logits.to(self.model.dtype) / self.temperature.reshape(-1, 1, 1))

    def with_decided(self, tokens: torch.Tensor, observed: torch.Tensor) -> structures.Evidence:
        """The block's inference Evidence with ``tokens`` [B, L] decided where ``observed`` [B, L]:
        the circuit conditioned on more positions, without rebuilding the evidence or the adapter."""
        return dataclasses.replace(self.inference_args()[0], tokens=tokens, observed=observed)

    def __repr__(self) -> str:
        return (f"CoDDBlockDistribution(batch={self.batch_shape[0]}, block_length={self.event_shape[0]}, "
                f"vocab={self.model.vocab_size}, masked={int(self.masked.sum())}"
                + (f", top_k={self.top_k})" if self.top_k is not None else ")"))


def _sample_arguments(sample_shape, generator) -> tuple[torch.Size, torch.Generator | None]:
    if isinstance(sample_shape, torch.Generator):                 # sample(generator)
        return torch.Size(), sample_shape
    return torch.Size(sample_shape), generator
