"""From a symbolic circuit to a schedule of tensor operations.

Groups are layered by depth (inputs at 0, every other group one above its deepest child), so a
layer only reads layers below it. Within a layer, groups of the same shape are *bucketed* and run
as one batched GEMM; groups that share a parameter table (tying) run as one larger GEMM.
Nothing here touches tensors' values: this is the compile-time half of the compiler.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..circuit import Circuit
from ..nodes import Categorical, NodeGroup, Product, Sum


@dataclass(frozen=True)
class GroupSpec:
    """What the top-down walk needs to know of one group: its kind, children and size."""
    kind: str                         # "input", "product" or "sum"
    children: tuple[int, ...]         # indices into circuit.groups
    num_nodes: int
    var: int | None = None            # an input group's variable


@dataclass
class InputBucket:
    """Input groups with the same node count, evaluated together."""
    groups: list[int]                 # indices into circuit.groups
    variables: list[int]
    sources: list[int]                # input parameter table of each group
    num_nodes: int

    @cached_property
    def shared_source(self) -> int | None:
        return self.sources[0] if len(set(self.sources)) == 1 else None


@dataclass
class SumBucket:
    """Sum groups of one layer with the same (K, C), evaluated as one batched GEMM."""
    groups: list[int]
    children: list[list[int]]         # per group, its children's indices
    sources: list[int]                # sum parameter table of each group
    num_nodes: int
    num_child_nodes: int

    @cached_property       # read on every pass
    def shared_source(self) -> int | None:
        return self.sources[0] if len(set(self.sources)) == 1 else None


@dataclass
class ProductStep:
    group: int
    children: list[int]
    edges: list[np.ndarray | None]    # per child, node index per product node; None = identity


@dataclass
class Layer:
    depth: int
    sums: list[SumBucket] = field(default_factory=list)
    products: list[ProductStep] = field(default_factory=list)


@dataclass
class Layout:
    """Everything the compiled module needs to know about the structure."""
    groups: list[GroupSpec]           # indexed like circuit.groups
    root: int
    num_vars: int
    vocab_sizes: list[int]
    input_buckets: list[InputBucket]
    layers: list[Layer]
    sum_sources: list[int]            # per sum table, the first group that uses it
    input_sources: list[int]          # per input table, likewise
    group_sum_source: dict[int, int]  # sum group → its table
    group_input_source: dict[int, int]
    input_node_offset: dict[int, int]  # input group → offset of its nodes in the flat input-node axis
    num_input_nodes: int
    last_read: list[list[int]] = field(default_factory=list)  # per layer, the groups it reads for the last time

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    def input_nodes_by_var(self) -> list[list[int]]:
        """For each variable, the positions of its input nodes on the flat input-node axis."""
        per_var: list[list[int]] = [[] for _ in range(self.num_vars)]
        for i, offset in self.input_node_offset.items():
            spec = self.groups[i]
            per_var[spec.var].extend(range(offset, offset + spec.num_nodes))
        return per_var


def build_layout(circuit: Circuit) -> Layout:
    """The schedule of ``circuit``: its tables, input buckets and layers (see the module docstring)."""
    groups = circuit.groups
    index = {g.id: i for i, g in enumerate(groups)}
    sum_sources, input_sources, group_sum_source, group_input_source = _tables(groups)
    input_buckets, input_node_offset, num_input_nodes = _input_buckets(groups, group_input_source)
    depth: dict[int, int] = {}
    for i, g in enumerate(groups):
        depth[i] = 0 if not g.children else 1 + max(depth[index[c.id]] for c in g.children)

    layers: dict[int, Layer] = {}
    sum_members: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        if isinstance(g, Product):
            layer = layers.setdefault(depth[i], Layer(depth[i]))
            edges = [None if _is_identity(g.edges[:, j], groups[index[c.id]].num_nodes) else g.edges[:, j].copy()
                     for j, c in enumerate(g.children)]
            layer.products.append(ProductStep(i, [index[c.id] for c in g.children], edges))
        elif isinstance(g, Sum):
            sum_members[(depth[i], g.num_nodes, g.num_child_nodes)].append(i)
    for (d, k, c), members in sorted(sum_members.items()):
        layer = layers.setdefault(d, Layer(d))
        layer.sums.append(SumBucket(groups=members,
                                    children=[[index[ch.id] for ch in groups[i].children] for i in members],
                                    sources=[group_sum_source[i] for i in members], num_nodes=k, num_child_nodes=c))

    ordered = [layers[d] for d in sorted(layers)]
    specs = [GroupSpec(g.kind, tuple(index[c.id] for c in g.children), g.num_nodes,
                       g.var if isinstance(g, Categorical) else None) for g in groups]
    return Layout(groups=specs, root=index[circuit.root.id], num_vars=circuit.num_vars,
                  vocab_sizes=list(circuit.vocab_sizes), input_buckets=input_buckets,
                  layers=ordered, sum_sources=sum_sources, input_sources=input_sources,
                  group_sum_source=group_sum_source, group_input_source=group_input_source,
                  input_node_offset=input_node_offset, num_input_nodes=num_input_nodes,
                  last_read=_last_reads(ordered))


def _tables(groups: list[NodeGroup]):
    """One trainable table per distinct owner; a tied group points at its owner's table, and the
    table remembers the first group using it (the owner itself may lie outside this circuit).
    Returns (sum_sources, input_sources, group → sum table, group → input table)."""
    def owner(g: NodeGroup) -> NodeGroup:
        return g.tie_to if g.tie_to is not None else g

    sum_sources: list[int] = []
    input_sources: list[int] = []
    table_of: dict[int, int] = {}
    for i, g in enumerate(groups):
        if isinstance(g, (Sum, Categorical)) and owner(g).id not in table_of:
            pool = sum_sources if isinstance(g, Sum) else input_sources
            table_of[owner(g).id] = len(pool)
            pool.append(i)
    group_sum_source = {i: table_of[owner(g).id] for i, g in enumerate(groups) if isinstance(g, Sum)}
    group_input_source = {i: table_of[owner(g).id] for i, g in enumerate(groups) if isinstance(g, Categorical)}
    return sum_sources, input_sources, group_sum_source, group_input_source


def _input_buckets(groups: list[NodeGroup], group_input_source: dict[int, int]):
    """Input groups bucketed by node count, and each group's offset on the flat input-node axis.
    Returns (buckets, offsets, total number of input nodes)."""
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        if isinstance(g, Categorical):
            by_size[g.num_nodes].append(i)
    buckets = [InputBucket(groups=members, variables=[groups[i].var for i in members],
                           sources=[group_input_source[i] for i in members], num_nodes=size)
               for size, members in sorted(by_size.items())]
    offsets: dict[int, int] = {}
    offset = 0
    for bucket in buckets:
        for i in bucket.groups:
            offsets[i] = offset
            offset += groups[i].num_nodes
    return buckets, offsets, offset


def _last_reads(layers: list[Layer]) -> list[list[int]]:
    """Per layer, the groups no later layer reads: a pass that only needs the root drops their values
    there, so its memory stays at a few layers' worth instead of growing with the circuit."""
    last: dict[int, int] = {}
    for position, layer in enumerate(layers):
        for step in layer.products:
            last.update((child, position) for child in step.children)
        for bucket in layer.sums:
            last.update((child, position) for children in bucket.children for child in children)
    per_layer: list[list[int]] = [[] for _ in layers]
    for group, position in last.items():
        per_layer[position].append(group)
    return per_layer


def _is_identity(column: np.ndarray, child_size: int) -> bool:
    return len(column) == child_size and bool(np.all(column == np.arange(child_size)))
