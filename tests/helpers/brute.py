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


def consistent(xs: np.ndarray, x: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Which full assignments agree with ``x`` on the observed positions (``observed`` True)."""
    return np.all((xs == x[None, :]) | ~observed[None, :], axis=1)


def brute_log_prob(circuit, x, observed, soft_evidence=None) -> float:
    xs, logp = log_measure(circuit, soft_evidence)
    return float(logsumexp(np.where(consistent(xs, x, observed), logp, -np.inf)))


def brute_marginals(circuit, x, observed, soft_evidence=None) -> np.ndarray:
    """Posterior marginals ``[n, V]`` of p(x_i | observed, evidence)."""
    xs, logp = log_measure(circuit, soft_evidence)
    logp = np.where(consistent(xs, x, observed), logp, -np.inf)
    post = np.exp(logp - logsumexp(logp))
    out = np.zeros((circuit.num_vars, circuit.vocab_size))
    for i in range(circuit.num_vars):
        np.add.at(out[i], xs[:, i], post)
    return out


def brute_max_product(circuit, x, observed, soft_evidence=None) -> float:
    """log of max over consistent completions of the max-product value times the evidence."""
    xs = all_assignments(circuit)
    with np.errstate(divide="ignore"):
        logv = np.log(evaluate(circuit, xs, semiring="max"))
    if soft_evidence is not None:
        logv = logv + soft_evidence[np.arange(xs.shape[1])[None, :], xs].sum(1)
    return float(np.max(np.where(consistent(xs, x, observed), logv, -np.inf)))


def free_index(tokens: np.ndarray, free: np.ndarray, vocab_sizes) -> np.ndarray:
    """Mixed-radix index ``[N]`` of the tokens ``[N, n]`` at the positions ``free``."""
    index = np.zeros(len(tokens), dtype=np.int64)
    for i in free:
        index = index * vocab_sizes[i] + tokens[:, i]
    return index


def brute_free_joint(circuit, x, observed, soft_evidence=None) -> np.ndarray:
    """Posterior probabilities of every joint configuration of the unobserved positions, indexed by
    :func:`free_index` (a vector of ``prod(vocab of unobserved)`` entries)."""
    xs, logp = log_measure(circuit, soft_evidence)
    keep = consistent(xs, x, observed)
    xs, logp = xs[keep], logp[keep]
    free = np.flatnonzero(~observed)
    probs = np.zeros(int(np.prod([circuit.vocab_sizes[i] for i in free])))
    np.add.at(probs, free_index(xs, free, circuit.vocab_sizes), np.exp(logp - logsumexp(logp)))
    return probs


def goodness_of_fit_pvalue(outcomes: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> float:
    """Pearson chi-square p-value of the sampled ``outcomes`` (indices into ``probs``) against
    ``probs``. Cells are pooled, smallest first, until each bin expects ``min_expected`` draws; a
    draw of a zero-probability outcome gives p = 0."""
    import torch                                   # only for the chi-square tail (regularized gamma)

    counts = np.bincount(outcomes, minlength=len(probs))
    if np.any(counts[probs <= 0] > 0):
        return 0.0
    expected = probs * counts.sum()
    bins: list[list[float]] = []
    acc_o = acc_e = 0.0
    for j in np.argsort(expected):
        if probs[j] <= 0:
            continue
        acc_o, acc_e = acc_o + counts[j], acc_e + expected[j]
        if acc_e >= min_expected:
            bins.append([acc_o, acc_e])
            acc_o = acc_e = 0.0
    if acc_e > 0:
        if bins:
            bins[-1][0] += acc_o
            bins[-1][1] += acc_e
        else:
            bins.append([acc_o, acc_e])
    if len(bins) < 2:
        return 1.0
    observed, expected = np.array(bins).T
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    dof = len(bins) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(statistic / 2, dtype=torch.float64)))


def assert_log_close(actual, expected, rtol=1e-9):
    """Log-values agree to ``rtol`` relative to max(1, |expected|); -inf must match -inf exactly."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert not np.isnan(actual).any(), actual
    assert np.array_equal(np.isneginf(actual), np.isneginf(expected)), (actual, expected)
    finite = np.isfinite(expected)
    tol = rtol * np.maximum(1.0, np.abs(expected[finite]))
    assert np.all(np.abs(actual[finite] - expected[finite]) <= tol), (actual, expected)
