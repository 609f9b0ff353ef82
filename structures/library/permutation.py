"""A circuit designed for a task: the uniform distribution over the permutations of n symbols.

Independent per-position predictions cannot represent it (a perfect factorized model emits a
permutation with probability n!/nⁿ); a small circuit represents it exactly. Its latent state after
position t is the *set* of symbols used so far, so it has 2ⁿ states in all, and it is built from the
node API like any user's structure:

    N_t(S) = Σ_{s ∉ S} 1/(n − t) · [x_t = s] · N_{t+1}(S ∪ {s}),        N_{n−1}(S) = [x_{n−1} = the one s ∉ S]

with one sum group per position (a node per subset S of size t), one product group per position
(a node per pair (S, s)) and one-hot input groups. Positions past the permutation (the end
symbols of a fixed-length block) hold ``pad`` with probability one.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..circuit import Circuit
from ..nodes import Categorical, NodeGroup, Product, StructureError, Sum

__all__ = ["permutation"]

#: 2ⁿ latent states: n = 20 is already a million.
MAX_SYMBOLS = 16


def permutation(n: int, length: int | None = None, vocab: int | None = None, pad: int | None = None) -> Circuit:
    """The uniform distribution over the orderings of symbols ``0..n-1`` at positions ``0..n-1``,
    and ``pad`` at positions ``n..length-1``.

    ``vocab`` (default: n, or n + 1 with a pad) is every position's vocabulary; tokens outside the
    permutation's symbols have probability zero (structural zeros, kept when the circuit trains).
    """
    length = n if length is None else length
    vocab = (n if pad is None else max(n, pad + 1)) if vocab is None else vocab
    _check(n, length, vocab, pad)
    emit = [Categorical(t, n, vocab, probs=np.eye(n, vocab), name=f"symbol[{t}]") for t in range(n)]
    below = None                                           # N_{t+1}: one node per subset of size t + 1
    for t in reversed(range(n)):
        subsets = list(itertools.combinations(range(n), t))
        if below is None:                                  # the last position: the one symbol left
            weights = np.zeros((len(subsets), n))
            for i, used in enumerate(subsets):
                weights[i, _left(used, n)[0]] = 1.0
            below = Sum(emit[t], num_nodes=len(subsets), weights=weights, name=f"sets[{t}]")
            continue
        index = {s: i for i, s in enumerate(itertools.combinations(range(n), t + 1))}
        pairs = [(i, s, index[tuple(sorted(used + (s,)))]) for i, used in enumerate(subsets) for s in _left(used, n)]
        step = Product(emit[t], below, edges=np.array([[s, j] for _, s, j in pairs]), name=f"choose[{t}]")
        weights = np.zeros((len(subsets), len(pairs)))
        for k, (i, _, _) in enumerate(pairs):
            weights[i, k] = 1.0 / (n - t)
        below = Sum(step, num_nodes=len(subsets), weights=weights, name=f"sets[{t}]")
    tail: list[NodeGroup] = [Categorical(p, 1, vocab, probs=np.eye(1, vocab, pad), name=f"pad[{p}]")
                             for p in range(n, length)]
    return Circuit(Product(below, *tail, name="block") if tail else below)


def _left(used: tuple[int, ...], n: int) -> list[int]:
    return [s for s in range(n) if s not in used]


def _check(n, length, vocab, pad) -> None:
    for name, value in (("n", n), ("length", length), ("vocab", vocab)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise StructureError(f"permutation: {name} must be a positive int, got {value!r}")
    if n > MAX_SYMBOLS:
        raise StructureError(f"permutation: n = {n} needs 2^{n} latent states; at most n = {MAX_SYMBOLS}")
    if length < n:
        raise StructureError(f"permutation: length {length} is shorter than the permutation ({n} positions)")
    if vocab < n:
        raise StructureError(f"permutation: vocab {vocab} cannot hold the {n} symbols")
    if length > n and pad is None:
        raise StructureError(f"permutation: positions {n}..{length - 1} need a pad token (pad=...)")
    if pad is not None and not (isinstance(pad, (int, np.integer)) and 0 <= pad < vocab and pad >= n):
        raise StructureError(f"permutation: pad must be a token in [{n}, {vocab}) (not a symbol), got {pad!r}")
