"""Latent trees: one latent variable per position, arranged on a tree; and Chow-Liu learning.

Position i carries a latent z_i with ``num_states`` states that emits x_i; along each tree edge
parent → child, P(z_child | z_parent) is a sum layer. With the tree learned from data by mutual
information (Chow-Liu) this is the hidden Chow-Liu tree (HCLT).
"""
from __future__ import annotations

import math

import networkx as nx
import numpy as np

from ..circuit import Circuit
from ..limits import MAX_NODES, MAX_TOTAL_ENTRIES, MAX_VOCAB, brief, check_count, check_entries, check_plan
from ..nodes import Categorical, Product, StructureError, Sum, random_distribution

#: Most columns :func:`chow_liu_tree` accepts: n(n-1)/2 weighted networkx edges (~1 GiB at 2,048).
MAX_CHOW_LIU_COLUMNS = 2048


def latent_tree(tree: nx.Graph, num_states: int, vocab: int, root: int | None = None, seed: int | None = 0) -> Circuit:
    """A latent tree circuit over the positions ``0..n-1`` that label ``tree``'s nodes."""
    if not isinstance(tree, nx.Graph) or tree.is_directed():
        raise StructureError("latent_tree: tree must be an undirected networkx.Graph")
    n = tree.number_of_nodes()
    if sorted(tree.nodes) != list(range(n)):
        raise StructureError(f"latent_tree: tree nodes must be the positions 0..{n - 1}, "
                             f"got {brief(sorted(tree.nodes))}")
    num_states = check_count(num_states, "latent_tree: num_states", 1, MAX_NODES, StructureError)
    vocab = check_count(vocab, "latent_tree: vocab", 1, MAX_VOCAB, StructureError)
    # per position: an emission table and a transition sum per tree edge, and a product
    check_plan("latent_tree", groups=3 * n + 1, largest_table=num_states * max(num_states, vocab),
               total_entries=n * num_states * (num_states + vocab),
               sizes=f"{n} positions, num_states={num_states}, vocab={vocab}", error=StructureError)
    if not nx.is_tree(tree):
        raise StructureError("latent_tree: the graph is not a tree (it must be connected and acyclic)")
    root = nx.center(tree)[0] if root is None else root
    if root not in tree:
        raise StructureError(f"latent_tree: root {brief(root)} is not a node of the tree")
    rng = np.random.default_rng(seed)
    oriented = nx.bfs_tree(tree, root)                                     # edges parent → child
    below: dict[int, Product | Categorical] = {}
    for node in nx.dfs_postorder_nodes(oriented, source=root):
        links = [Sum(below.pop(child), num_nodes=num_states, rng=rng, name=f"edge[{node}->{child}]")
                 for child in sorted(oriented.successors(node))]
        emit = Categorical(node, num_states, vocab, rng=rng, name=f"emit[{node}]")
        below[node] = Product(emit, *links, name=f"latent[{node}]") if links else emit
    return Circuit(Sum(below[root], num_nodes=1, weights=random_distribution((1, num_states), rng), name="root"))


def mutual_information(data: np.ndarray, vocab: int, pseudocount: float = 1.0) -> np.ndarray:
    """Pairwise mutual information ``[n, n]`` (nats) of the columns of ``data`` [N, n]."""
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[0] == 0 or not np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"data must be a non-empty [N, n] array of token ids, got shape {data.shape} "
                         f"of {data.dtype}")
    vocab = check_count(vocab, "mutual_information: vocab", 1, MAX_VOCAB)
    if not isinstance(pseudocount, (int, float, np.number)) or not 0 <= pseudocount < math.inf:
        raise ValueError(f"mutual_information: pseudocount must be >= 0 and finite, got {brief(pseudocount)}")
    if data.min() < 0 or data.max() >= vocab:
        raise ValueError(f"data has token ids outside 0..{vocab - 1}")
    (N, n), V = data.shape, vocab
    check_entries(max(N * n * V, n * n * V * V), f"mutual_information: one-hot [{N}, {n}, {V}] and joint "
                  f"[{n}, {n}, {V}, {V}] arrays (data {N} x {n}, vocab {V})", MAX_TOTAL_ENTRIES)
    onehot = np.eye(vocab)[data]                                           # [N, n, V]
    joint = np.einsum("bia,bjc->ijac", onehot, onehot) + pseudocount       # [n, n, V, V]
    joint /= joint.sum(axis=(2, 3), keepdims=True)
    pi = joint.sum(3)                                                      # [n, n, V]
    pj = joint.sum(2)
    with np.errstate(divide="ignore", invalid="ignore"):                   # 0 · log 0 = 0 (pseudocount 0)
        terms = joint * (np.log(joint) - np.log(pi[..., :, None]) - np.log(pj[..., None, :]))
    mi = np.where(joint > 0, terms, 0.0).sum((2, 3))
    mi[np.arange(n), np.arange(n)] = 0.0
    return mi


def chow_liu_tree(data: np.ndarray, vocab: int, pseudocount: float = 1.0) -> nx.Graph:
    """The maximum-mutual-information spanning tree over the columns of ``data`` (at most
    :data:`MAX_CHOW_LIU_COLUMNS` of them: the tree is found on the complete networkx graph)."""
    columns = np.shape(data)[1] if np.ndim(data) == 2 else 0
    if columns > MAX_CHOW_LIU_COLUMNS:
        raise ValueError(f"chow_liu_tree: data has {columns} columns; the complete graph over them would have "
                         f"{columns * (columns - 1) // 2} edges (at most {MAX_CHOW_LIU_COLUMNS} columns)")
    mi = mutual_information(data, vocab, pseudocount)
    graph = nx.Graph()
    graph.add_nodes_from(range(mi.shape[0]))
    graph.add_weighted_edges_from((i, j, mi[i, j]) for i in range(mi.shape[0]) for j in range(i + 1, mi.shape[0]))
    return nx.maximum_spanning_tree(graph)


def hclt(data: np.ndarray, num_states: int, vocab: int, seed: int | None = 0) -> Circuit:
    """A hidden Chow-Liu tree: :func:`latent_tree` on the Chow-Liu tree of ``data``."""
    return latent_tree(chow_liu_tree(data, vocab), num_states, vocab, seed=seed)
