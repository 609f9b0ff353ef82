"""The dependence-only product: the circuit couples the masked positions but cannot repair a single one.

The paper's product p̂ ∝ C(x) · Π_i q_i(x_i) lets the circuit change each position's distribution
on its own: with one position masked, p̂(x_i) ∝ C(x_i | x_O) · q_i(x_i), and a circuit that knows
the data better than the backbone's conditional improves it (a "repair", not coupling). Dividing out
the circuit's own one-position conditionals given the decided positions O,

    p̂_dep(x_M | x_t)  ∝  C(x_M | x_O) / Π_{i∈M} C(x_i | x_O)  ·  Π_{i∈M} q_i(x_i),

leaves only the circuit's dependence between masked positions (a ratio that is 1 when they are
independent under C given x_O). With one position masked p̂_dep is q_i exactly; with several the
backbone's per-position distributions stay the first-order term and the circuit tilts them jointly.

The division is a unary potential per masked leaf, so p̂_dep is still a circuit times soft evidence:
its normalizer, marginals, samples and MAP are the same single passes. The conditionals cost one
marginals query of the circuit alone; in training they stay differentiable (a double backward), so
the objective is the exact likelihood of p̂_dep.
"""
from __future__ import annotations

import torch

import structures
from structures.logspace import guarded_log

__all__ = ["circuit_log_conditionals", "divide_conditionals"]


def circuit_log_conditionals(model, tokens: torch.Tensor, observed: torch.Tensor, node_potentials=None,
                             log_params=None) -> torch.Tensor:
    """[B, L, V] log C(x_i = v | the observed tokens) at the unobserved positions, 0 at observed ones
    (and 0 where C forbids v: the product is zero there whatever its potential). Differentiable in
    the circuit's parameters and ``node_potentials`` when gradients are enabled."""
    evidence = structures.Evidence(tokens, observed, node_potentials=node_potentials)
    probs = model.marginals(evidence, log_params=log_params, differentiable=True)          # [B, L, V]
    keep = ~observed.unsqueeze(-1) & (probs > 0)
    return torch.where(keep, guarded_log(torch.where(keep, probs, torch.ones_like(probs))), 0.0)


def divide_conditionals(potentials, log_conditionals: torch.Tensor):
    """The masked leaves' log-potentials with the circuit's conditionals [B, L, V] divided out: dense
    ``potentials`` [B, L, V], or a :class:`structures.CandidateEvidence` (each candidate's own)."""
    if isinstance(potentials, structures.CandidateEvidence):
        return structures.CandidateEvidence(potentials.ids, potentials.log_potentials
                                            - log_conditionals.gather(-1, potentials.ids))
    return potentials - log_conditionals
