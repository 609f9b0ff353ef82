"""Circuits designed for tasks: the uniform distribution over the assignments of n symbols to cells
that satisfy all-different constraints: permutations (one group of cells), Latin squares (rows and
columns), sudoku (rows, columns and boxes).

Independent per-position predictions cannot represent these (a perfect factorized model emits a
permutation with probability n!/nⁿ); a small circuit represents them exactly. Reading the cells in
order, its latent state before cell t is the *frontier*: for every constraint group that has cells
both before and after t, the set of symbols it has used. With N(state) the number of ways to
complete the cells from a state (counted backwards, exactly),

    node(state before t) = Σ_{s allowed} N(next) / N(state) · [x_t = s] · node(next),

a sum group per cell (a node per reachable frontier), a product group per cell (a node per
(frontier, symbol) pair) and one-hot input groups: built from the node API like any user's
structure. Positions after the cells (the end symbols of a fixed-length block) hold ``pad`` with
probability one. A permutation's frontiers are the subsets of used symbols: 2ⁿ states in all.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..circuit import Circuit
from ..limits import MAX_GROUPS, MAX_VARIABLES, MAX_VOCAB, brief, check_count, check_entries
from ..nodes import Categorical, NodeGroup, Product, StructureError, Sum

__all__ = ["all_different", "permutation", "latin_square"]

#: Symbols per cell: the frontier sets are bit masks of this many bits.
MAX_SYMBOLS = 16
#: Frontier states of one cell, summed over the cells: past this the structure is too big to build.
MAX_STATES = 1 << 20

Frontier = tuple[int, ...]                                  # a used-symbol bit mask per active group


def permutation(n: int, length: int | None = None, vocab: int | None = None, pad: int | None = None) -> Circuit:
    """The uniform distribution over the orderings of symbols ``0..n-1`` at positions ``0..n-1``, and
    ``pad`` at positions ``n..length-1`` (see :func:`all_different`)."""
    check_count(n, "permutation: n", 1, MAX_SYMBOLS, StructureError)
    return all_different([list(range(n))], n, length, vocab, pad)


def latin_square(order: int, boxes: tuple[int, int] | None = None, length: int | None = None,
                 vocab: int | None = None, pad: int | None = None) -> Circuit:
    """The uniform distribution over the Latin squares of ``order`` (symbols ``0..order-1``, cells
    row-major); with ``boxes=(rows, cols)`` also every box all-different: sudoku (4×4: ``boxes=(2, 2)``)."""
    check_count(order, "latin_square: order", 1, MAX_SYMBOLS, StructureError)
    groups = [[r * order + c for c in range(order)] for r in range(order)]
    groups += [[r * order + c for r in range(order)] for c in range(order)]
    if boxes is not None:
        h, w = boxes
        if h * w != order or order % h or order % w:
            raise StructureError(f"latin_square: boxes {boxes!r} must tile the {order}×{order} grid")
        groups += [[(br + r) * order + bc + c for r in range(h) for c in range(w)]
                   for br in range(0, order, h) for bc in range(0, order, w)]
    return all_different(groups, order, length, vocab, pad)


def all_different(groups: Sequence[Sequence[int]], num_symbols: int, length: int | None = None,
                  vocab: int | None = None, pad: int | None = None) -> Circuit:
    """The uniform distribution over assignments of symbols ``0..num_symbols-1`` to the cells
    ``0..m-1`` (m = one past the largest cell named in ``groups``) in which the cells of every group
    differ, and ``pad`` at positions ``m..length-1``. ``vocab`` (default: enough for the symbols and
    the pad) is every position's vocabulary; other tokens have probability zero (structural zeros,
    kept when the circuit trains)."""
    cells = _check_groups(groups, num_symbols)
    length = cells if length is None else length
    vocab = (num_symbols if pad is None else max(num_symbols, pad + 1)) if vocab is None else vocab
    _check(num_symbols, cells, length, vocab, pad)
    member = [[g for g, group in enumerate(groups) if t in group] for t in range(cells)]
    active = _active_groups(groups, cells)
    states = _forward(member, active, num_symbols, cells)
    counts = _backward(states, member, active, num_symbols, cells)
    emit = [Categorical(t, num_symbols, vocab, probs=np.eye(num_symbols, vocab), name=f"symbol[{t}]")
            for t in range(cells)]
    below, index = None, {(): 0}                                # the node of each frontier after the cell
    for t in reversed(range(cells)):
        here = [s for s in states[t] if counts[t][s] > 0]
        moves = [(i, x, _step(s, x, t, member, active)) for i, s in enumerate(here)
                 for x in range(num_symbols) if _allowed(s, x, t, member, active)]
        moves = [(i, x, nxt) for i, x, nxt in moves if counts[t + 1].get(nxt, 0) > 0]
        weights = np.zeros((len(here), len(moves) if below is not None else num_symbols))
        for k, (i, x, nxt) in enumerate(moves):
            weights[i, k if below is not None else x] += counts[t + 1][nxt] / counts[t][here[i]]
        if below is None:                                       # the last cell: its symbol ends the walk
            node = Sum(emit[t], num_nodes=len(here), weights=weights, name=f"frontier[{t}]")
        else:
            edges = np.array([[x, index[nxt]] for _, x, nxt in moves])
            node = Sum(Product(emit[t], below, edges=edges, name=f"choose[{t}]"), num_nodes=len(here),
                       weights=weights, name=f"frontier[{t}]")
        below, index = node, {s: i for i, s in enumerate(here)}
    tail: list[NodeGroup] = [Categorical(p, 1, vocab, probs=np.eye(1, vocab, pad), name=f"pad[{p}]")
                             for p in range(cells, length)]
    return Circuit(Product(below, *tail, name="block") if tail else below)


def _allowed(state: Frontier, x: int, t: int, member, active) -> bool:
    """May cell t hold symbol x? Not if a group of t already used it before t."""
    used = dict(zip(active[t], state))
    return not any(used.get(g, 0) >> x & 1 for g in member[t])


def _step(state: Frontier, x: int, t: int, member, active) -> Frontier:
    """The frontier after cell t holds x: every group of t records x; finished groups leave it."""
    used = dict(zip(active[t], state))
    for g in member[t]:
        used[g] = used.get(g, 0) | 1 << x
    return tuple(used.get(g, 0) for g in active[t + 1])


def _active_groups(groups, cells: int) -> list[list[int]]:
    """Per position t (0..cells), the groups with cells both before t and at or after t."""
    spans = [(min(group), max(group)) for group in groups]
    return [[g for g, (first, last) in enumerate(spans) if first < t <= last] for t in range(cells + 1)]


def _forward(member, active, num_symbols: int, cells: int) -> list[list[Frontier]]:
    """The frontiers reachable before each cell, in first-reached order (deterministic)."""
    states: list[list[Frontier]] = [[()]]
    for t in range(cells):
        seen: dict[Frontier, None] = {}
        for s in states[t]:
            for x in range(num_symbols):
                if _allowed(s, x, t, member, active):
                    seen.setdefault(_step(s, x, t, member, active))
        states.append(list(seen))
        if sum(len(level) for level in states) > MAX_STATES:
            raise StructureError(f"all_different: more than {MAX_STATES} frontier states by cell {t}: "
                                 "the constraints leave too many partial assignments to tell apart")
    return states


def _backward(states, member, active, num_symbols: int, cells: int) -> list[dict[Frontier, int]]:
    """N_t(state): the number of valid completions of cells t.. from each frontier (exact ints)."""
    counts: list[dict[Frontier, int]] = [{} for _ in range(cells)] + [{(): 1}]
    for t in reversed(range(cells)):
        for s in states[t]:
            counts[t][s] = sum(counts[t + 1].get(_step(s, x, t, member, active), 0)
                               for x in range(num_symbols) if _allowed(s, x, t, member, active))
    if counts[0][()] == 0:
        raise StructureError("all_different: the constraints admit no assignment at all")
    return counts


def _check_groups(groups, num_symbols: int) -> int:
    check_count(num_symbols, "all_different: num_symbols", 1, MAX_SYMBOLS, StructureError)
    if not isinstance(groups, Sequence) or not groups or len(groups) > MAX_GROUPS:
        raise StructureError(f"all_different: groups must be a non-empty list of lists of cells, got {brief(groups)}")
    cells = 0
    for group in groups:
        if not isinstance(group, Sequence) or not group or len(set(group)) != len(group):
            raise StructureError(f"all_different: every group must list distinct cells, got {brief(group)}")
        for t in group:
            check_count(t, "all_different: a cell", 0, MAX_VARIABLES - 1, StructureError)
        cells = max(cells, max(group) + 1)
    if any(len(group) > num_symbols for group in groups):
        raise StructureError(f"all_different: a group of more than {num_symbols} cells cannot be all different")
    return cells


def _check(num_symbols, cells, length, vocab, pad) -> None:
    check_count(length, "all_different: length", cells, MAX_VARIABLES, StructureError)
    check_count(vocab, "all_different: vocab", num_symbols, MAX_VOCAB, StructureError)
    if length > cells and pad is None:
        raise StructureError(f"all_different: positions {cells}..{length - 1} need a pad token (pad=...)")
    if pad is not None:
        check_count(pad, "all_different: pad (a token that is no symbol)", num_symbols, vocab - 1, StructureError)
    check_entries((length - cells) * vocab + cells * num_symbols * vocab, "all_different: the input tables",
                  error=StructureError)
