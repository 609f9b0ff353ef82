"""Writing a :class:`~structures.Circuit` as a pyjuice ``.jpc`` file (pyjuice not needed).

The file is what ``juice.save`` writes and ``juice.load`` reads: a protocol-4 pickle of a list of
node dicts in post-order, the root last. Choices made here:

* pyjuice needs sum children to be products or inputs and product children to be sums or
  inputs; a Sum under a Sum gets a one-child identity product between them, a Product under a
  Product an identity sum (``load_jpc`` drops both again);
* block sizes: each node vector gets the largest power of two ≤ ``block_size`` that divides the
  node counts of everything pyjuice requires to share it (a product and its children, the
  children of one sum, tied vectors), falling back where product edges are not block aligned;
  node counts that are not multiples of two get block size 1;
* products use block-level edge ids only when their block count equals their first child's
  (otherwise pyjuice's loader misreads them), else node-level (sparse) edge ids;
* sum weights are written as ``[E, B, cB]`` blocks over every (sum block, child block) pair with
  a non-zero weight, and ``zero_param_mask`` marks the zero weights inside those blocks;
* parameters are float32 (pyjuice's loader fails on float64); an extra key ``params_float64``,
  which pyjuice ignores, keeps them exactly for ``load_jpc``;
* ``dist`` is the pickle of ``pyjuice.nodes.distributions.categorical.Categorical(num_cats)``,
  written opcode by opcode;
* tied groups are written once, with the first group of the tie class holding the parameters
  and the others pointing at it through ``source_node``;
* the file is written to a temporary file in the same folder and moved into place.
"""
from __future__ import annotations

import os
import pickle
import tempfile

import numpy as np

from ..circuit import Circuit
from ..limits import brief
from ..nodes import Categorical, NodeGroup, Product, Sum, iter_groups
from ..validate import validate_groups
from .entries import FLOAT64_KEY, MAX_NODES_PER_ENTRY, check_path
from .dist_pickle import categorical_dist_pickle
from .safe_pickle import JpcError

DEFAULT_MAX_BLOCK_SIZE = 32


class _WNode:
    """One pyjuice node vector to write."""

    def __init__(self, kind: str, num_nodes: int, children: list["_WNode"], group: NodeGroup | None = None,
                 edges: np.ndarray | None = None, weights: np.ndarray | None = None):
        self.kind = kind
        self.num_nodes = num_nodes
        self.children = children
        self.group = group
        self.edges = edges  # products: node-level [K, num_children]
        self.weights = weights  # identity sums
        self.owner: _WNode | None = None  # tie source when tied
        self.index = -1

    def sum_weights(self) -> np.ndarray:
        return self.weights if self.weights is not None else self.group.weights


def _plan(groups: list[NodeGroup]) -> list[_WNode]:
    nodes: list[_WNode] = []
    of_group: dict[int, _WNode] = {}
    wrappers: dict[tuple[int, str], _WNode] = {}
    owners: dict[int, _WNode] = {}

    def wrapped(child: _WNode, parent_kind: str) -> _WNode:
        if child.kind != parent_kind:
            return child
        key = (id(child), parent_kind)
        if key not in wrappers:
            K = child.num_nodes
            if parent_kind == "sum":  # a sum under a sum: one-child identity product
                w = _WNode("product", K, [child], edges=np.arange(K, dtype=np.int64)[:, None])
            else:  # a product under a product: identity sum
                w = _WNode("sum", K, [child], weights=np.eye(K))
            nodes.append(w)
            wrappers[key] = w
        return wrappers[key]

    for g in groups:
        kids = [of_group[c.id] for c in g.children]
        if isinstance(g, Categorical):
            w = _WNode("input", g.num_nodes, [], g)
        elif isinstance(g, Product):
            w = _WNode("product", g.num_nodes, [wrapped(k, "product") for k in kids], g, edges=g.edges)
        elif isinstance(g, Sum):
            w = _WNode("sum", g.num_nodes, [wrapped(k, "sum") for k in kids], g)
        else:
            raise JpcError(f"{g.label}: cannot write node group type {type(g).__name__}")
        if isinstance(g, (Categorical, Sum)):
            source = g.tie_to if g.tie_to is not None else g
            if source.id in owners:
                w.owner = owners[source.id]
            else:
                owners[source.id] = w
        nodes.append(w)
        of_group[g.id] = w
    for i, w in enumerate(nodes):
        w.index = i
    return nodes


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def _product_layout(w: _WNode, B: int, first_child_blocks: int) -> tuple[str, np.ndarray] | None:
    """('block', edge_ids) or ('sparse', edge_ids) for a product at block size B, or None."""
    K = w.num_nodes
    E = w.edges
    if B == 1 or (E[::B] % B == 0).all() and (E.reshape(K // B, B, -1) - E[::B][:, None, :]
                                               == np.arange(B)[None, :, None]).all():
        if K // B == first_child_blocks:
            return "block", (E[::B] // B).astype(np.int64)
    if K != first_child_blocks:
        return "sparse", E.astype(np.int64)
    return None


def _block_sizes(nodes: list[_WNode], max_block: int) -> list[int]:
    uf = _UnionFind(len(nodes))
    for w in nodes:
        if w.kind == "product":
            for c in w.children:
                uf.union(w.index, c.index)
        elif w.kind == "sum":
            for c in w.children[1:]:
                uf.union(w.children[0].index, c.index)
        if w.owner is not None:
            uf.union(w.index, w.owner.index)
            if w.kind == "sum":
                uf.union(w.children[0].index, w.owner.children[0].index)
    cls = [uf.find(w.index) for w in nodes]
    size: dict[int, int] = {}
    for w in nodes:
        B = size.get(cls[w.index], max_block)
        while w.num_nodes % B:
            B //= 2
        size[cls[w.index]] = B
    changed = True
    while changed:
        changed = False
        for w in nodes:
            if w.kind != "product":
                continue
            B = size[cls[w.index]]
            if _product_layout(w, B, w.children[0].num_nodes // B) is None:
                size[cls[w.index]] = B // 2
                changed = True
    return [size[c] for c in cls]


def _sum_entry(w: _WNode, B: int, cB: int, tied: bool) -> dict:
    weights = w.sum_weights()
    K, C = weights.shape
    blocks = weights.reshape(K // B, B, C // cB, cB).transpose(0, 2, 1, 3)
    rows, cols = np.nonzero(np.any(blocks != 0, axis=(2, 3)))
    entry = {"edge_ids": np.stack([rows, cols]).astype(np.int64)}
    if not tied:
        params = np.ascontiguousarray(blocks[rows, cols], dtype=np.float64)
        entry["params"] = params.astype(np.float32)
        entry[FLOAT64_KEY] = params
        if np.any(params == 0):
            entry["zero_param_mask"] = params == 0
    return entry


def _entries(nodes: list[_WNode], max_block: int) -> list[dict]:
    sizes = _block_sizes(nodes, max_block)
    entries = []
    for w in nodes:
        B = sizes[w.index]
        entry = {"type": {"input": "Input", "product": "Product", "sum": "Sum"}[w.kind],
                 "num_node_blocks": w.num_nodes // B, "block_size": B,
                 "chs": tuple(c.index for c in w.children)}
        if w.kind == "product":
            cB = sizes[w.children[0].index]
            _, entry["edge_ids"] = _product_layout(w, B, w.children[0].num_nodes // cB)
        elif w.kind == "sum":
            entry.update(_sum_entry(w, B, sizes[w.children[0].index], w.owner is not None))
        else:
            g = w.group
            if w.owner is None:
                probs = np.ascontiguousarray(g.probs, dtype=np.float64).reshape(-1)
                entry["params"] = probs.astype(np.float32)
                entry[FLOAT64_KEY] = probs
            entry["scope"] = [g.var]
            entry["dist"] = categorical_dist_pickle(g.vocab)
        if w.owner is not None:
            entry["source_node"] = w.owner.index
        entries.append(entry)
    return entries


def save_jpc(circuit: Circuit | NodeGroup, path, *, block_size: int = DEFAULT_MAX_BLOCK_SIZE) -> None:
    """Write ``circuit`` as a pyjuice ``.jpc`` file that ``juice.load`` accepts.

    ``circuit`` may also be a root group with several nodes (a multi-root pyjuice circuit).
    ``block_size`` is the largest pyjuice block size to use (a power of two; 1 writes every
    vector with block size 1). The write is atomic: a temporary file in the same folder is
    moved over ``path`` only once complete.
    """
    path = check_path(path)
    if type(block_size) is not int or block_size < 1 or block_size & (block_size - 1):
        raise JpcError(f"block_size must be a power of two, got {brief(block_size)}")
    if block_size > MAX_NODES_PER_ENTRY:  # pyjuice's blocks hold nodes of one vector: none is larger
        raise JpcError(f"block_size = {brief(block_size)} is more than the largest node vector ({MAX_NODES_PER_ENTRY})")
    if isinstance(circuit, Circuit):
        groups = circuit.groups
    elif isinstance(circuit, NodeGroup):
        groups = iter_groups([circuit])
        validate_groups(groups)
    else:
        raise JpcError(f"save_jpc needs a Circuit or a node group, got {type(circuit).__name__}")
    data = pickle.dumps(_entries(_plan(groups), block_size), protocol=4)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".jpc.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
