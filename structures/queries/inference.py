"""Likelihoods and marginals: one upward pass, and its gradient.

Marginals use the differential view of circuits: the gradient of log Z with respect to the
soft-evidence log-potential of token v at position i is exactly P(x_i = v | evidence).
"""
from __future__ import annotations

import dataclasses

import torch

from ..compile.engine import CircuitEngine
from ..compile.tables import PassTables
from ..types import CandidateEvidence, Evidence, LogParams
from .evidence import check_log_params, prepare
from .finite import check_log_z, check_marginals, check_unread_tables

__all__ = ["log_prob", "marginals", "constant_tables", "differentiable_evidence"]


def log_prob(model: CircuitEngine, x=None, observed=None, soft_evidence=None, *, node_potentials=None,
             log_params=None) -> torch.Tensor:
    """``[B]``: log Σ over unobserved positions of C(x) · Π_i exp(soft_evidence[i, x_i]).

    With every position unobserved this is the log-normalizer of the product of experts; with no
    soft evidence it is the log-probability of the observed positions (marginalizing the rest).
    """
    evidence = prepare(model, x, observed, soft_evidence, node_potentials)
    check_log_params(model, log_params, evidence.batch_size)
    tables = model.pass_tables(log_params)
    log_z = model.root_value(evidence, tables=tables)
    check_log_z(model, log_z, "log_prob", evidence, log_params, impossible_ok=True)
    check_unread_tables(model, tables, "log_prob", evidence, log_params)
    return log_z


def marginals(model: CircuitEngine, x=None, observed=None, soft_evidence=None, *, node_potentials=None,
              log_params=None, differentiable: bool = False) -> torch.Tensor:
    """``[B, n, V]``: posterior marginals P(x_i = v | observed positions, evidence) of every position
    (one-hot at observed positions). With :class:`CandidateEvidence` ``[B, n, k]``: the probability
    of each candidate slot (``soft_evidence.scatter`` turns it into ``[B, n, V]``). Raises if some
    batch row's evidence is impossible.

    ``differentiable``: when gradients are enabled the marginals keep their graph to the parameters
    (the module's or ``log_params``), the soft evidence and the node potentials, for objectives that
    contain marginals (a double backward when trained); otherwise they are constants."""
    evidence = prepare(model, x, observed, soft_evidence, node_potentials)
    check_log_params(model, log_params, evidence.batch_size)
    keep_graph = differentiable and torch.is_grad_enabled()
    tables = model.pass_tables(log_params) if keep_graph else constant_tables(model, log_params)
    with torch.enable_grad():
        shifted, leaf = (_offset_evidence if keep_graph else differentiable_evidence)(model, evidence)
        log_z = model.root_value(shifted, tables=tables)
        check_log_z(model, log_z, "marginals", evidence, log_params)
        (grad,) = torch.autograd.grad(log_z.sum(), leaf, create_graph=keep_graph)
    check_marginals(model, grad, "marginals", evidence, log_params)
    return grad


def constant_tables(model: CircuitEngine, log_params: LogParams | None) -> PassTables:
    """The pass tables as constants (no gradient w.r.t. the parameters), so the marginals' backward
    pass reaches the evidence only, and the module's own tables come from its inference cache."""
    with torch.no_grad():
        return model.pass_tables(None if log_params is None else log_params.detach())


def _offset_evidence(model: CircuitEngine, evidence: Evidence) -> tuple[Evidence, torch.Tensor]:
    """As :func:`differentiable_evidence`, but the leaf is a zero offset added to the potentials, so
    the potentials keep their own graph (the gradient w.r.t. the offset is still the marginals)."""
    if evidence.candidates is not None:
        cand = evidence.candidates
        leaf = torch.zeros_like(cand.log_potentials, requires_grad=True)
        return dataclasses.replace(evidence, candidates=CandidateEvidence(cand.ids, cand.log_potentials + leaf)), leaf
    leaf = torch.zeros(evidence.batch_size, model.num_vars, model.vocab_size, dtype=model.dtype, device=model.device,
                       requires_grad=True)
    return dataclasses.replace(evidence, soft=leaf if evidence.soft is None else evidence.soft + leaf), leaf


def differentiable_evidence(model: CircuitEngine, evidence: Evidence) -> tuple[Evidence, torch.Tensor]:
    """A copy of ``evidence`` whose potentials are a fresh leaf requiring grad, and that leaf: the
    dense soft evidence (zeros if none was given) or the candidates' log-potentials. The gradient of
    log Z w.r.t. it is the marginals. (A copy: a caller's prepared Evidence is reused across queries.)"""
    if evidence.candidates is not None:
        cand = evidence.candidates
        leaf = cand.log_potentials.detach().requires_grad_(True)
        return dataclasses.replace(evidence, candidates=CandidateEvidence(cand.ids, leaf)), leaf
    base = evidence.soft if evidence.soft is not None else torch.zeros(
        evidence.batch_size, model.num_vars, model.vocab_size, dtype=model.dtype, device=model.device)
    leaf = base.detach().requires_grad_(True)
    return dataclasses.replace(evidence, soft=leaf), leaf
