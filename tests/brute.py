"""Brute-force reference: evaluate a symbolic circuit on every full assignment (numpy, float64).

Independent of the compiler: it walks the node groups directly. Only for tiny circuits.
"""
from __future__ import annotations

import itertools

import numpy as np

from structures import Categorical, Circuit, Product, Sum


def all_assignments(circuit: Circuit) -> np.ndarray:
    """Every full assignment, ``[prod(vocab_sizes), num_vars]``."""
    return np.array(list(itertools.product(*[range(v) for v in circuit.vocab_sizes])), dtype=np.int64)


def evaluate(circuit: Circuit, assignments: np.ndarray, semiring: str = "sum") -> np.ndarray:
    """Root value (probability, or max-product value) of each full assignment, ``[N]``."""
    values: dict[int, np.ndarray] = {}
    for g in circuit.groups:
        if isinstance(g, Categorical):
            values[g.id] = g.probs[:, assignments[:, g.var]].T
        elif isinstance(g, Product):
            out = np.ones((len(assignments), g.num_nodes))
            for j, child in enumerate(g.children):
                out = out * values[child.id][:, g.edges[:, j]]
            values[g.id] = out
        elif isinstance(g, Sum):
            stacked = np.concatenate([values[c.id] for c in g.children], axis=1)
            if semiring == "sum":
                values[g.id] = stacked @ g.weights.T
            else:
                values[g.id] = (stacked[:, None, :] * g.weights[None]).max(-1)
    return values[circuit.root.id][:, 0]


def log_measure(circuit: Circuit, soft_evidence: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All assignments and the log of C(x)·Π_i exp(e_i(x_i)) for each: ``([N, n], [N])``."""
    xs = all_assignments(circuit)
    with np.errstate(divide="ignore"):
        logp = np.log(evaluate(circuit, xs))
    if soft_evidence is not None:
        logp = logp + soft_evidence[np.arange(xs.shape[1])[None, :], xs].sum(1)
    return xs, logp


def logsumexp(a: np.ndarray, axis=None) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def consistent(xs: np.ndarray, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Which full assignments agree with ``x`` on the observed positions (``mask`` True)."""
    return np.all((xs == x[None, :]) | ~mask[None, :], axis=1)


def brute_log_prob(circuit, x, mask, soft_evidence=None) -> float:
    xs, logp = log_measure(circuit, soft_evidence)
    return float(logsumexp(np.where(consistent(xs, x, mask), logp, -np.inf)))


def brute_marginals(circuit, x, mask, soft_evidence=None) -> np.ndarray:
    """Posterior marginals ``[n, V]`` of p(x_i | observed, evidence)."""
    xs, logp = log_measure(circuit, soft_evidence)
    logp = np.where(consistent(xs, x, mask), logp, -np.inf)
    post = np.exp(logp - logsumexp(logp))
    out = np.zeros((circuit.num_vars, circuit.vocab_size))
    for i in range(circuit.num_vars):
        np.add.at(out[i], xs[:, i], post)
    return out


def brute_max_product(circuit, x, mask, soft_evidence=None) -> float:
    """log of max over consistent completions of the max-product value times the evidence."""
    xs = all_assignments(circuit)
    with np.errstate(divide="ignore"):
        logv = np.log(evaluate(circuit, xs, semiring="max"))
    if soft_evidence is not None:
        logv = logv + soft_evidence[np.arange(xs.shape[1])[None, :], xs].sum(1)
    return float(np.max(np.where(consistent(xs, x, mask), logv, -np.inf)))
