"""Reading pyjuice ``.jpc`` files into :class:`~structures.Circuit` objects (pyjuice not needed).

The steps, one module each: :mod:`~structures.jpc.entries` reads the pickled node list safely and
checks every entry's header; :mod:`~structures.jpc.tables` decodes inputs, product edges and sum
weights; :mod:`~structures.jpc.ties` resolves ``source_node`` ties (which may point forward). This
module turns every entry reachable from the root into one of our node groups (a tied one gets
``tie_to`` the first loaded group of its tie class, with the parameters of pyjuice's source).

With ``simplify=True`` (the default) pass-through vectors are replaced by their child, which
leaves every node's value unchanged: one-child products with identity edges (pyjuice wraps
every input given to a sum in one; ``save_jpc`` puts one between a Sum and a Sum child) and
untied one-child sums whose weights are the identity (``juice.compile`` inserts identity-sum +
one-child-product pairs, which ``juice.save`` then writes; ``save_jpc`` puts one between a
Product and a Product child). ``simplify=False`` keeps every entry as a group.
"""
from __future__ import annotations

import os

import numpy as np

from ..circuit import Circuit
from ..limits import brief
from ..nodes import Categorical, NodeGroup, Product, StructureError, Sum
from .entries import DEFAULT_MAX_BYTES, Entry, parse_entries, read_jpc_entries
from .safe_pickle import JpcError
from .tables import EntryTables
from .ties import tie_sources

__all__ = ["load_jpc", "load_jpc_roots", "read_jpc_entries"]

#: Most table entries (input probabilities, product edges, dense sum weights) in one loaded circuit.
MAX_TOTAL_ELEMENTS = 1 << 28
#: Most root nodes :func:`load_jpc_roots` turns into circuits (pyjuice's multi-root circuits have a few).
MAX_ROOTS = 1 << 12


class _Loader:
    """Builds the node groups of the entries reachable from the last entry (the root)."""

    def __init__(self, entries: list[Entry], simplify: bool, missing_params: str):
        self.entries = entries
        self.simplify = simplify
        self.tables = EntryTables(entries, missing_params)
        self.sources = tie_sources(self.tables)
        self.class_size: dict[int, int] = {}
        for e in entries:
            if e.kind != "Product":
                self.class_size[self.sources[e.index]] = self.class_size.get(self.sources[e.index], 0) + 1

    def build(self) -> NodeGroup:
        root = len(self.entries) - 1
        reachable, stack = {root}, [root]
        while stack:
            for c in self.entries[stack.pop()].children:
                if c not in reachable:
                    reachable.add(c)
                    stack.append(c)
        self._check_budget(reachable)
        groups: dict[int, NodeGroup] = {}
        owners: dict[int, NodeGroup] = {}
        for i in sorted(reachable):
            e = self.entries[i]
            try:
                groups[i] = self._build_one(e, [groups[c] for c in e.children], owners)
            except StructureError as err:
                raise JpcError(f"{e.label}: {err}") from err
        return groups[root]

    def _check_budget(self, reachable: set[int]) -> None:
        total, counted = 0, set()
        for i in reachable:
            e = self.entries[i]
            if e.kind == "Product":
                total += e.num_nodes * len(e.children)
                continue
            if self.sources[i] in counted:
                continue  # a tied group shares its source's table
            counted.add(self.sources[i])
            if e.kind == "Input":
                total += e.num_nodes * self.tables.input_dist(e)[1]
            else:
                cbs, ch_blocks = self.tables.sum_shape(e)
                total += e.num_nodes * ch_blocks * cbs
        if total > MAX_TOTAL_ELEMENTS:
            raise JpcError(f"the circuit needs {total} table entries as dense node groups, more than this "
                           f"reader allows ({MAX_TOTAL_ELEMENTS})")

    def _build_one(self, e: Entry, children: list[NodeGroup], owners: dict[int, NodeGroup]) -> NodeGroup:
        name = f"jpc[{e.index}]"
        src = self.sources[e.index]
        if e.kind == "Input":
            var, vocab = self.tables.input_dist(e)
            if src in owners:
                return Categorical(var, e.num_nodes, vocab, tie_to=owners[src], name=name)
            group = Categorical(var, e.num_nodes, vocab, probs=self.tables.input_probs(self.entries[src]), name=name)
            owners[src] = group
            return group
        if e.kind == "Sum":
            self.tables.sum_shape(e)
            if src in owners:
                return Sum(*children, num_nodes=e.num_nodes, tie_to=owners[src], name=name)
            weights = self.tables.sum_weights(self.entries[src])
            if (self.simplify and self.class_size[src] == 1 and len(children) == 1
                    and weights.shape[0] == weights.shape[1] and np.array_equal(weights, np.eye(weights.shape[0]))):
                return children[0]  # an identity sum passes its child through
            group = Sum(*children, num_nodes=e.num_nodes, weights=weights, name=name)
            owners[src] = group
            return group
        edges = self.tables.product_edges(e)
        if (self.simplify and len(children) == 1 and children[0].num_nodes == e.num_nodes
                and np.array_equal(edges[:, 0], np.arange(e.num_nodes))):
            return children[0]  # a one-child identity product passes its child through
        return Product(*children, edges=edges, name=name)



def _root_circuit(root: NodeGroup, i: int) -> Circuit:
    """The circuit under node ``i`` of the root group (a one-node copy of the root if needed)."""
    try:
        if root.num_nodes == 1:
            return Circuit(root)
        name = f"{root.name}[{i}]"
        if isinstance(root, Sum):
            single = Sum(*root.children, num_nodes=1, weights=root.weights[i:i + 1], name=name)
        elif isinstance(root, Product):
            single = Product(*root.children, edges=root.edges[i:i + 1], name=name)
        else:
            single = Categorical(root.var, 1, root.vocab, probs=root.probs[i:i + 1], name=name)
        return Circuit(single)
    except StructureError as err:
        raise JpcError(f"the loaded node graph is not a valid circuit: {err}") from err


def _load_root_group(path, simplify: bool, missing_params: str, max_bytes: int) -> NodeGroup:
    entries = parse_entries(read_jpc_entries(path, max_bytes=max_bytes))
    return _Loader(entries, simplify, missing_params).build()


def load_jpc_roots(path, *, simplify: bool = True, missing_params: str = "error",
                   max_bytes: int = DEFAULT_MAX_BYTES) -> list[Circuit]:
    """One :class:`Circuit` per node of the root node vector of a ``.jpc`` (pyjuice's
    ``pc(x)`` returns ``[B, num_roots]``); the circuits share all groups below the root."""
    group = _load_root_group(path, simplify, missing_params, max_bytes)
    if group.num_nodes > MAX_ROOTS:  # each root is its own validated Circuit: cost roots x groups
        raise JpcError(f"{os.fspath(path)!r}: the root vector has {group.num_nodes} root nodes, more than "
                       f"load_jpc_roots builds ({MAX_ROOTS}); load them one at a time with load_jpc(path, root=i)")
    return [_root_circuit(group, i) for i in range(group.num_nodes)]


def load_jpc(path, root: int | None = None, *, simplify: bool = True, missing_params: str = "error",
             max_bytes: int = DEFAULT_MAX_BYTES) -> Circuit:
    """Load a pyjuice ``.jpc`` file as a :class:`Circuit`, without pyjuice.

    ``root`` picks one node of a root vector with several nodes (else that is an error).
    ``simplify`` drops pyjuice's pass-through nodes; ``missing_params='uniform'`` loads a file
    saved before its parameters were initialized. Every problem is a :class:`JpcError`.
    """
    group = _load_root_group(path, simplify, missing_params, max_bytes)
    if root is None:
        if group.num_nodes != 1:
            raise JpcError(f"{os.fspath(path)!r}: the root vector has {group.num_nodes} root nodes "
                           f"(0..{group.num_nodes - 1}); pass root=i, or use load_jpc_roots()")
        root = 0
    if type(root) is not int or not 0 <= root < group.num_nodes:
        raise JpcError(f"root={brief(root)} is out of range: the root vector has {group.num_nodes} node(s)")
    return _root_circuit(group, root)
