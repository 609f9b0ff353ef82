"""Exact joint samples and max-product (MAP) completions: an upward pass, then the top-down walk
(:mod:`.topdown`) in the sum-product or the max-product semiring."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch

from ..compile.engine import CircuitEngine
from ..compile.semiring import MAX_PRODUCT, SUM_PRODUCT
from .evidence import check_log_params, prepare
from .inference import constant_tables, differentiable_evidence, raise_if_impossible
from .topdown import top_down

__all__ = ["SampleAndMarginals", "sample", "sample_and_marginals", "map_assignment"]


class SampleAndMarginals(NamedTuple):
    """``sample`` [B, n] or [S, B, n]; ``marginals`` [B, n, V] (over the candidates, [B, n, k], with
    :class:`CandidateEvidence`); ``log_normalizer`` [B] log Z of the evidence."""
    sample: torch.Tensor
    marginals: torch.Tensor
    log_normalizer: torch.Tensor


def sample(model: CircuitEngine, x=None, observed=None, soft_evidence=None, num_samples: int | None = None,
           generator: torch.Generator | None = None, *, node_potentials=None, log_params=None) -> torch.Tensor:
    """Exact samples of the unobserved positions given the observed ones and the evidence.

    Returns ``[B, n]`` (observed positions copied from ``x``), or ``[num_samples, B, n]``.
    With no batched argument, B = 1.
    """
    _check_num_samples(num_samples)
    evidence = prepare(model, x, observed, soft_evidence, node_potentials)
    batch = evidence.batch_size
    repeats = num_samples or 1
    check_log_params(model, log_params, batch)
    evidence = evidence.repeat(repeats)
    log_params = None if log_params is None else log_params.repeat(repeats)
    with torch.no_grad():
        tables = model.pass_tables(log_params)
        values = model.upward(evidence, semiring=SUM_PRODUCT, tables=tables)
        raise_if_impossible(values[model.layout.root][:, 0], "sample")
        tokens = top_down(model, values, evidence, tables.log_params, SUM_PRODUCT, generator)
    return tokens if num_samples is None else tokens.reshape(repeats, batch, model.num_vars)


def sample_and_marginals(model: CircuitEngine, x=None, observed=None, soft_evidence=None,
                         num_samples: int | None = None, generator: torch.Generator | None = None, *,
                         node_potentials=None, log_params=None) -> SampleAndMarginals:
    """Exact samples (as :func:`sample`), the exact marginals (as :func:`~structures.queries.marginals`)
    and log Z, from ONE upward pass: the pass runs with the evidence requiring grad, its backward
    gives the marginals, and the top-down walk reuses its stored values."""
    _check_num_samples(num_samples)
    evidence = prepare(model, x, observed, soft_evidence, node_potentials)
    batch = evidence.batch_size
    repeats = num_samples or 1
    check_log_params(model, log_params, batch)
    tables = constant_tables(model, log_params)
    with torch.enable_grad():
        evidence, leaf = differentiable_evidence(model, evidence)
        values = model.upward(evidence, tables=tables)
        log_z = values[model.layout.root][:, 0]
        raise_if_impossible(log_z, "sample_and_marginals")
        (marginals,) = torch.autograd.grad(log_z.sum(), leaf)
    with torch.no_grad():
        values = [None if v is None else v.detach() for v in values]
        if repeats > 1:                                       # S draws per row: the stored values repeated
            values = [None if v is None else v.repeat(repeats, *([1] * (v.dim() - 1))) for v in values]
        evidence = evidence.detach().repeat(repeats)
        tokens = top_down(model, values, evidence, tables.log_params.repeat(repeats), SUM_PRODUCT, generator)
    sample = tokens if num_samples is None else tokens.reshape(repeats, batch, model.num_vars)
    return SampleAndMarginals(sample, marginals, log_z.detach())


def map_assignment(model: CircuitEngine, x=None, observed=None, soft_evidence=None, *, node_potentials=None,
                   log_params=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The max-product completion of the unobserved positions and its log-probability.

    Returns ``(assignment [B, n], log_prob [B])`` where ``log_prob`` is the exact
    ``log_prob(assignment)`` (with the soft evidence). Max-product maximizes over the circuit's
    latent choices too: for deterministic circuits (and circuits without latent sums) the
    completion is the exact MAP; for latent-variable circuits (HMMs) it is the MAP of the joint
    over tokens and latent path, Viterbi-style.
    """
    evidence = prepare(model, x, observed, soft_evidence, node_potentials)
    check_log_params(model, log_params, evidence.batch_size)
    with torch.no_grad():
        if evidence.candidates is not None:
            evidence = dataclasses.replace(evidence, candidates=evidence.candidates.merged())
        tables = model.pass_tables(log_params)
        values = model.upward(evidence, semiring=MAX_PRODUCT, tables=tables)
        raise_if_impossible(values[model.layout.root][:, 0], "map")
        tokens = top_down(model, values, evidence, tables.log_params, MAX_PRODUCT)
        full = dataclasses.replace(evidence, tokens=tokens, observed=torch.ones_like(evidence.observed))
        score = model.root_value(full, tables=tables)
    return tokens, score


def _check_num_samples(num_samples) -> None:
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int)
                                    or num_samples < 1):
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
