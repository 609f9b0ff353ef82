"""Symbolic circuit nodes.

Every object here is a *group* of K nodes of one kind over one scope (pyjuice calls this a node
vector). An HMM with 1,024 hidden states over 32 positions is about a hundred groups, not tens of
thousands of nodes. Edges run between groups:

* ``Categorical(var, num_nodes, vocab)``: K categorical distributions over one variable.
* ``Product(*children, edges)``: K products; node k multiplies node ``edges[k, j]`` of child j.
* ``Sum(*children, num_nodes, weights)``: K mixtures over the concatenated nodes of its children,
  ``weights[k, c]`` the weight of child node c in sum node k (zeros are absent edges).

Parameters are probabilities (float64 numpy arrays) and are checked to be distributions.
``tie_to=`` shares one parameter table between groups (a homogeneous HMM uses one transition and
one emission table for all positions).
"""
from __future__ import annotations

import itertools
from typing import Iterable, Sequence

import numpy as np

from .limits import MAX_NODES, MAX_TABLE_ENTRIES, MAX_VARIABLES, MAX_VOCAB, brief, check_count, check_entries

_next_id = itertools.count()

#: Rows of a parameter table must sum to one within this tolerance.
NORMALIZATION_TOLERANCE = 1e-6


class StructureError(ValueError):
    """A circuit, or one of its node groups, breaks a structural rule."""


def random_distribution(shape: Sequence[int], rng: np.random.Generator | int | None,
                        concentration: float = 1.0) -> np.ndarray:
    """Rows drawn from a symmetric Dirichlet: the default initializer of every parameter table."""
    rng = np.random.default_rng(rng)
    draws = rng.gamma(concentration, size=tuple(shape)) + 1e-3
    return draws / draws.sum(axis=-1, keepdims=True)


def _as_distribution_table(values, shape: tuple[int, int], what: str) -> np.ndarray:
    table = np.asarray(values, dtype=np.float64)
    if table.shape != shape:
        raise StructureError(f"{what}: expected shape {shape}, got {table.shape}")
    if not np.all(np.isfinite(table)):
        raise StructureError(f"{what}: contains NaN or infinite values")
    if np.any(table < 0):
        raise StructureError(f"{what}: contains negative probabilities")
    row_sums = table.sum(axis=-1)
    bad = np.flatnonzero(np.abs(row_sums - 1.0) > NORMALIZATION_TOLERANCE)
    if bad.size:
        raise StructureError(
            f"{what}: row {int(bad[0])} sums to {row_sums[bad[0]]:.6g}, not 1 (rows must be distributions)")
    return table / row_sums[:, None]


class NodeGroup:
    """Common part of the three kinds of node group."""

    kind = "abstract"

    def __init__(self, num_nodes: int, children: Sequence["NodeGroup"], name: str | None):
        num_nodes = check_count(num_nodes, f"{type(self).__name__}: num_nodes", 1, MAX_NODES, StructureError)
        for child in children:
            if not isinstance(child, NodeGroup):
                raise StructureError(f"{type(self).__name__}: child {brief(child)} is not a node group")
        self.id = next(_next_id)
        self.num_nodes = num_nodes
        self.children: tuple[NodeGroup, ...] = tuple(children)
        self.name = name
        self.scope: frozenset[int] = frozenset()

    @property
    def label(self) -> str:
        """How errors name this group."""
        return f"{type(self).__name__}#{self.id}" + (f" '{self.name}'" if self.name else "")

    def __repr__(self) -> str:
        return f"<{self.label} K={self.num_nodes} scope={brief(sorted(self.scope))}>"


class Categorical(NodeGroup):
    """K categorical distributions over the tokens ``0..vocab-1`` of one variable.

    ``probs`` is ``[num_nodes, vocab]``; omitted, it is drawn at random from ``rng``. With
    ``tie_to=other`` the group shares ``other``'s table (its shape must match) and may sit on
    another variable.
    """

    kind = "input"

    def __init__(self, var: int, num_nodes: int, vocab: int, probs=None, *, tie_to: "Categorical | None" = None,
                 rng: np.random.Generator | int | None = None, name: str | None = None):
        super().__init__(num_nodes, (), name)
        self.var = check_count(var, f"{self.label}: var", 0, MAX_VARIABLES - 1, StructureError)
        self.vocab = check_count(vocab, f"{self.label}: vocab", 1, MAX_VOCAB, StructureError)
        check_entries(self.num_nodes * self.vocab, f"{self.label}: a [{self.num_nodes}, {self.vocab}] table",
                      MAX_TABLE_ENTRIES, StructureError)
        self.scope = frozenset([self.var])
        self.tie_to = _resolve_tie(self, tie_to, (self.num_nodes, self.vocab))
        if self.tie_to is not None:
            if probs is not None:
                raise StructureError(f"{self.label}: give either probs or tie_to, not both")
            self._probs = None
        elif probs is None:
            self._probs = random_distribution((self.num_nodes, self.vocab), rng)
        else:
            self._probs = _as_distribution_table(probs, (self.num_nodes, self.vocab), f"{self.label} probs")

    @property
    def probs(self) -> np.ndarray:
        return self.tie_to.probs if self.tie_to is not None else self._probs

    @probs.setter
    def probs(self, value) -> None:
        target = self.tie_to if self.tie_to is not None else self
        target._probs = _as_distribution_table(value, (self.num_nodes, self.vocab), f"{self.label} probs")

    @property
    def parameter_shape(self) -> tuple[int, int]:
        return (self.num_nodes, self.vocab)


class Product(NodeGroup):
    """K product nodes; node k multiplies node ``edges[k, j]`` of child ``j`` for every child.

    Without ``edges`` every child must have K nodes and node k multiplies the k-th node of each
    (the elementwise product). Children must have disjoint scopes (decomposability).
    """

    kind = "product"

    def __init__(self, *children: NodeGroup, edges=None, name: str | None = None):
        if not children:
            raise StructureError("Product: needs at least one child")
        if edges is None:
            sizes = {c.num_nodes for c in children}
            if len(sizes) != 1:
                raise StructureError(f"Product: children have different sizes "
                                     f"{brief([c.num_nodes for c in children])}; pass edges=")
            num_nodes = sizes.pop()
            _check_edge_count(num_nodes, len(children))
            edges = np.repeat(np.arange(num_nodes)[:, None], len(children), axis=1)
        else:
            edges = np.asarray(edges)
            if edges.ndim != 2 or edges.shape[1] != len(children):
                raise StructureError(
                    f"Product: edges must be [num_nodes, {len(children)}] (one column per child), got {edges.shape}")
            num_nodes = edges.shape[0]
        super().__init__(num_nodes, children, name)
        if not np.issubdtype(edges.dtype, np.integer):
            raise StructureError(f"{self.label}: edges must be integers, got {edges.dtype}")
        for j, child in enumerate(children):
            column = edges[:, j]
            if column.min() < 0 or column.max() >= child.num_nodes:
                raise StructureError(
                    f"{self.label}: edges[:, {j}] points outside child {child.label} (0..{child.num_nodes - 1})")
        self.edges = edges.astype(np.int64)
        scope: set[int] = set()
        for child in children:
            overlap = scope & child.scope
            if overlap:
                raise StructureError(
                    f"{self.label} is not decomposable: child {child.label} shares variables "
                    f"{brief(sorted(overlap))} with another child")
            scope |= child.scope
        self.scope = frozenset(scope)


class Sum(NodeGroup):
    """K sum (mixture) nodes over the concatenated nodes of the children.

    ``weights`` is ``[num_nodes, C]`` with C the children's total node count; each row is a
    distribution and zero entries are absent edges. Children must share one scope (smoothness).
    """

    kind = "sum"

    def __init__(self, *children: NodeGroup, num_nodes: int, weights=None, tie_to: "Sum | None" = None,
                 rng: np.random.Generator | int | None = None, name: str | None = None):
        if not children:
            raise StructureError("Sum: needs at least one child")
        super().__init__(num_nodes, children, name)
        scope = children[0].scope
        for child in children[1:]:
            if child.scope != scope:
                raise StructureError(
                    f"{self.label} is not smooth: child {child.label} has scope {brief(sorted(child.scope))}, "
                    f"child {children[0].label} has {brief(sorted(scope))}")
        self.scope = scope
        self.num_child_nodes = sum(c.num_nodes for c in children)
        check_entries(self.num_nodes * self.num_child_nodes,
                      f"{self.label}: a [{self.num_nodes}, {self.num_child_nodes}] weight table",
                      MAX_TABLE_ENTRIES, StructureError)
        self.tie_to = _resolve_tie(self, tie_to, (self.num_nodes, self.num_child_nodes))
        if self.tie_to is not None:
            if weights is not None:
                raise StructureError(f"{self.label}: give either weights or tie_to, not both")
            self._weights = None
        elif weights is None:
            self._weights = random_distribution((self.num_nodes, self.num_child_nodes), rng)
        else:
            self._weights = _as_distribution_table(
                weights, (self.num_nodes, self.num_child_nodes), f"{self.label} weights")

    @property
    def weights(self) -> np.ndarray:
        return self.tie_to.weights if self.tie_to is not None else self._weights

    @weights.setter
    def weights(self, value) -> None:
        target = self.tie_to if self.tie_to is not None else self
        target._weights = _as_distribution_table(
            value, (self.num_nodes, self.num_child_nodes), f"{self.label} weights")

    @property
    def parameter_shape(self) -> tuple[int, int]:
        return (self.num_nodes, self.num_child_nodes)


def _check_edge_count(num_nodes: int, num_children: int) -> None:
    check_entries(num_nodes * num_children, f"Product: edges [{num_nodes}, {num_children}]", MAX_TABLE_ENTRIES,
                  StructureError)


def _resolve_tie(group: NodeGroup, source, shape: tuple[int, int]):
    if source is None:
        return None
    if type(source) is not type(group):
        raise StructureError(f"{group.label}: tie_to must be a {type(group).__name__}, got {brief(source)}")
    while source.tie_to is not None:
        source = source.tie_to
    if source.parameter_shape != shape:
        raise StructureError(
            f"{group.label}: cannot tie to {source.label}: parameter shapes {shape} and {source.parameter_shape} "
            "differ")
    return source


def iter_groups(roots: Iterable[NodeGroup]) -> list[NodeGroup]:
    """All groups reachable from ``roots``, children before parents, each once."""
    order: list[NodeGroup] = []
    seen: set[int] = set()
    on_path: set[int] = set()
    for root in roots:
        stack: list[tuple[NodeGroup, bool]] = [(root, False)]
        while stack:
            group, expanded = stack.pop()
            if expanded:
                on_path.discard(group.id)
                if group.id not in seen:
                    seen.add(group.id)
                    order.append(group)
                continue
            if group.id in seen:
                continue
            if group.id in on_path:
                raise StructureError(f"circuit has a cycle through {group.label}")
            on_path.add(group.id)
            stack.append((group, True))
            stack.extend((child, False) for child in reversed(group.children) if child.id not in seen)
    return order
