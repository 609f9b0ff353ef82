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
from ..limits import MAX_VARIABLES, MAX_VOCAB, check_count, check_plan
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
    check_count(n, "permutation: n", 1, MAX_SYMBOLS, StructureError)
    check_count(length, "permutation: length", n, MAX_VARIABLES, StructureError)
    check_count(vocab, "permutation: vocab", n, MAX_VOCAB, StructureError)
    if length > n and pad is None:
        raise StructureError(f"permutation: positions {n}..{length - 1} need a pad token (pad=...)")
    if pad is not None:
        check_count(pad, "permutation: pad (a token that is no symbol)", n, vocab - 1, StructureError)
    states = 1 << n                                         # Σ_t C(n, t) sum nodes, n · 2^(n-1) products
    check_plan("permutation", groups=3 * n + length, largest_table=states * n * vocab,
               total_entries=n * states * (n + vocab) + length * vocab, sizes=f"n={n}, length={length}, vocab={vocab}",
               error=StructureError)
