"""Likelihoods and marginals: one upward pass, and its gradient.

Marginals use the differential view of circuits: the gradient of log Z with respect to the
soft-evidence log-potential of token v at position i is exactly P(x_i = v | evidence).
"""
from __future__ import annotations

import torch

from ..compile.module import CompiledCircuit
from .evidence import check_log_params, make_evidence


def log_prob(model: CompiledCircuit, x=None, mask=None, soft_evidence=None, *, node_potentials=None,
             log_params=None) -> torch.Tensor:
    """``[B]``: log Σ over unobserved positions of C(x) · Π_i exp(soft_evidence[i, x_i]).

    With every position unobserved this is the log-normalizer of the product of experts; with no
    soft evidence it is the log-probability of the observed positions (marginalizing the rest).
    """
    evidence = make_evidence(model, x, mask, soft_evidence, node_potentials)
    check_log_params(model, log_params, evidence.batch_size)
    return model.root_value(evidence, log_params)


def marginals(model: CompiledCircuit, x=None, mask=None, soft_evidence=None, *, node_potentials=None,
              log_params=None) -> torch.Tensor:
    """``[B, n, V]``: posterior marginals P(x_i = v | observed positions, evidence) of every position
    (one-hot at observed positions). Raises if some batch row's evidence is impossible."""
    evidence = make_evidence(model, x, mask, soft_evidence, node_potentials)
    check_log_params(model, log_params, evidence.batch_size)
    with torch.enable_grad():
        base = evidence.soft if evidence.soft is not None else torch.zeros(
            evidence.batch_size, model.num_vars, model.vocab_size, dtype=model.dtype, device=model.device)
        soft = base.detach().requires_grad_(True)
        evidence.soft = soft
        if log_params is not None:
            log_params = type(log_params)([t.detach() for t in log_params.sums], [t.detach() for t in log_params.inputs])
        log_z = model.root_value(evidence, log_params)
        raise_if_impossible(log_z, "marginals")
        (grad,) = torch.autograd.grad(log_z.sum(), soft)
    return grad


def raise_if_impossible(log_z: torch.Tensor, query: str) -> None:
    impossible = torch.isneginf(log_z)
    if bool(impossible.any()):
        rows = impossible.nonzero().flatten().tolist()
        raise ValueError(f"{query}: the evidence has probability zero in batch row(s) {rows[:10]} "
                         "(an impossible event: no completion is possible)")
