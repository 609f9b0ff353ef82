"""Exact joint samples and max-product (MAP) completions: an upward pass, then the top-down walk
(:mod:`.topdown`) in the sum-product or the max-product semiring."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch

from ..compile.engine import CircuitEngine
from ..compile.semiring import MAX_PRODUCT, SUM_PRODUCT
from .evidence import check_log_params, prepare
from .finite import check_log_z, check_marginals, check_unread_tables
from .inference import constant_tables, differentiable_evidence
from .topdown import top_down

__all__ = ["SampleAndMarginals", "sample", "sample_and_marginals", "map_assignment", "MAX_SAMPLE_VALUES"]

#: Most values (num_samples x batch rows, times the nodes of every group plus the tokens per row) one
#: sample or sample_and_marginals call stores for its top-down walk: 4 GiB in float32.
MAX_SAMPLE_VALUES = 1 << 30


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
    _check_sample_size(model, repeats, batch)
    evidence = evidence.repeat(repeats)
    log_params = None if log_params is None else log_params.repeat(repeats)
    with torch.no_grad():
        tables = model.pass_tables(log_params)
        values = model.upward(evidence, semiring=SUM_PRODUCT, tables=tables)
        check_log_z(model, values[model.layout.root][:, 0], "sample", evidence, log_params)
        check_unread_tables(model, tables, "sample", evidence, log_params)
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
    _check_sample_size(model, repeats, batch)
    tables = constant_tables(model, log_params)
    with torch.enable_grad():
        differentiable, leaf = differentiable_evidence(model, evidence)
        values = model.upward(differentiable, tables=tables)
        log_z = values[model.layout.root][:, 0]
        check_log_z(model, log_z, "sample_and_marginals", evidence, log_params)
        (marginals,) = torch.autograd.grad(log_z.sum(), leaf)
    check_marginals(model, marginals, "sample_and_marginals", evidence, log_params)
    with torch.no_grad():
        values = [None if v is None else v.detach() for v in values]
        if repeats > 1:                                       # S draws per row: the stored values repeated
            values = [None if v is None else v.repeat(repeats, *([1] * (v.dim() - 1))) for v in values]
        evidence = differentiable.detach().repeat(repeats)
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
        check_log_z(model, values[model.layout.root][:, 0], "map", evidence, log_params)
        tokens = top_down(model, values, evidence, tables.log_params, MAX_PRODUCT)
        full = dataclasses.replace(evidence, tokens=tokens, observed=torch.ones_like(evidence.observed))
        score = model.root_value(full, tables=tables)
        check_log_z(model, score, "map", full, log_params, impossible_ok=True)
    return tokens, score


def _check_num_samples(num_samples) -> None:
    if num_samples is None:
        return
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        # the type, or the value when it is small: never a repr (str() of a 5,000-digit int raises)
        got = num_samples if type(num_samples) is int and num_samples > -(1 << 63) else type(num_samples).__name__
        raise ValueError(f"num_samples must be a positive int, got {got}")


def _check_sample_size(model: CircuitEngine, repeats: int, batch: int) -> None:
    """A sampling pass stores every group's values for num_samples x batch rows: refuse, before
    anything is repeated, a count whose values would not fit (draw such counts in chunks)."""
    per_row = sum(spec.num_nodes for spec in model.layout.groups) + model.num_vars
    needed = repeats * max(batch, 1) * per_row
    if needed > MAX_SAMPLE_VALUES:
        count = str(repeats) if repeats.bit_length() < 64 else f"2^{repeats.bit_length() - 1}+"  # no 5,000-digit str
        rows = f"{count} x {batch}"
        raise ValueError(f"num_samples x batch = {rows} rows of {per_row} values each is more than a sampling "
                         f"pass may hold ({MAX_SAMPLE_VALUES} values); draw the samples in smaller chunks")
