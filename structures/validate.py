"""Whole-circuit checks: acyclic, smooth, decomposable, consistent shapes and vocabularies.

Node constructors already check what one group can see (its own shapes, its children's scopes);
this module checks what needs the whole graph, and re-checks the rest in case groups were
mutated after construction. Each violation raises :class:`StructureError` naming the group.
"""
from __future__ import annotations

import networkx as nx
import numpy as np

from .limits import brief
from .nodes import NORMALIZATION_TOLERANCE, Categorical, NodeGroup, Product, StructureError, Sum


def group_graph(groups: list[NodeGroup]) -> nx.DiGraph:
    """The group-level DAG, edges from parent to child."""
    graph = nx.DiGraph()
    for g in groups:
        graph.add_node(g.id, group=g)
        for child in g.children:
            graph.add_edge(g.id, child.id)
    return graph


def validate_groups(groups: list[NodeGroup]) -> None:
    graph = group_graph(groups)
    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        raise StructureError(f"circuit has a cycle through {graph.nodes[cycle[0][0]]['group'].label}")
    vocab_of_var: dict[int, tuple[int, NodeGroup]] = {}
    for g in groups:
        if isinstance(g, Categorical):
            _check_table(g, g.probs, g.parameter_shape)
            seen = vocab_of_var.setdefault(g.var, (g.vocab, g))
            if seen[0] != g.vocab:
                raise StructureError(
                    f"{g.label}: variable {g.var} has vocab {g.vocab} here but {seen[0]} in {seen[1].label}")
        elif isinstance(g, Product):
            _check_product(g)
        elif isinstance(g, Sum):
            _check_sum(g)
        else:
            raise StructureError(f"{g.label}: unknown node group type {type(g).__name__}")
    _check_variables(vocab_of_var)


def _check_variables(vocab_of_var: dict) -> None:
    """The variables must be exactly 0..n-1 (n: how many there are). Checked against n, the number
    actually present, so a stray index of 2**40 costs nothing: no range up to it is materialized."""
    n = len(vocab_of_var)
    beyond = [v for v in vocab_of_var if v >= n]
    if beyond:
        missing = [v for v in range(n) if v not in vocab_of_var]
        raise StructureError(
            f"circuit variables must be 0..n-1; no input group covers variable(s) {brief(missing)} "
            f"({n} variable(s) present, so {brief(sorted(beyond))} out of range)")


def _check_product(g: Product) -> None:
    if g.edges.shape != (g.num_nodes, len(g.children)):
        raise StructureError(f"{g.label}: edges shape {g.edges.shape} != ({g.num_nodes}, {len(g.children)})")
    scope: set[int] = set()
    for j, child in enumerate(g.children):
        if scope & child.scope:
            raise StructureError(f"{g.label} is not decomposable: child {child.label} overlaps another child")
        scope |= child.scope
        if g.edges[:, j].min() < 0 or g.edges[:, j].max() >= child.num_nodes:
            raise StructureError(f"{g.label}: edges[:, {j}] points outside child {child.label}")
    if frozenset(scope) != g.scope:
        raise StructureError(f"{g.label}: recorded scope does not match its children")


def _check_sum(g: Sum) -> None:
    for child in g.children:
        if child.scope != g.scope:
            raise StructureError(f"{g.label} is not smooth: child {child.label} has a different scope")
    expected = sum(c.num_nodes for c in g.children)
    if g.num_child_nodes != expected:
        raise StructureError(f"{g.label}: children now have {expected} nodes, weights cover {g.num_child_nodes}")
    _check_table(g, g.weights, g.parameter_shape)


def _check_table(g: NodeGroup, table: np.ndarray, shape: tuple[int, int]) -> None:
    if table.shape != shape:
        raise StructureError(f"{g.label}: parameter table has shape {table.shape}, expected {shape}")
    if not np.all(np.isfinite(table)) or np.any(table < 0):
        raise StructureError(f"{g.label}: parameters must be finite and non-negative")
    if np.any(np.abs(table.sum(-1) - 1.0) > NORMALIZATION_TOLERANCE):
        raise StructureError(f"{g.label}: parameter rows must each sum to 1")
