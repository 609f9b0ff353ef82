"""The ``Circuit`` object: a validated DAG of node groups under one root node."""
from __future__ import annotations

import copy

import numpy as np

from .limits import brief
from .nodes import Categorical, NodeGroup, Product, StructureError, Sum, iter_groups
from .validate import validate_groups


class Circuit:
    """A smooth, decomposable circuit over variables ``0..num_vars-1`` with a single root node.

    Building a ``Circuit`` validates the whole graph (see :mod:`structures.validate`); every rule
    it breaks is a :class:`StructureError` that names the group at fault.
    """

    def __init__(self, root: NodeGroup):
        if not isinstance(root, NodeGroup):
            raise StructureError(f"Circuit: root must be a node group, got {brief(root)}")
        if root.num_nodes != 1:
            raise StructureError(
                f"Circuit: root {root.label} has {root.num_nodes} nodes; a circuit has one root node "
                "(wrap it in Sum(root, num_nodes=1))")
        self.root = root
        self.groups: list[NodeGroup] = iter_groups([root])
        validate_groups(self.groups)
        inputs = [g for g in self.groups if isinstance(g, Categorical)]
        self.num_vars = max(g.var for g in inputs) + 1
        vocab = {}
        for g in inputs:
            vocab.setdefault(g.var, g.vocab)
        self.vocab_sizes: list[int] = [vocab[v] for v in range(self.num_vars)]

    @property
    def vocab_size(self) -> int:
        """The largest vocabulary of any variable (soft evidence is ``[..., vocab_size]``)."""
        return max(self.vocab_sizes)

    @property
    def num_parameters(self) -> int:
        """Free parameter entries, counting each tied table once."""
        total = 0
        for g in self.groups:
            if isinstance(g, (Sum, Categorical)) and g.tie_to is None:
                rows, cols = g.parameter_shape
                total += rows * cols
        return total

    def copy(self) -> "Circuit":
        """A deep copy (new node objects, same structure and parameters).

        Built group by group in topological order rather than by ``copy.deepcopy``, whose
        recursion follows the children chain and overflows Python's stack on long circuits.
        """
        def shallow(group: NodeGroup) -> NodeGroup:
            new = copy.copy(group)
            for table in ("_probs", "_weights", "edges"):
                if getattr(group, table, None) is not None:
                    setattr(new, table, getattr(group, table).copy())
            return new

        twins = {g.id: shallow(g) for g in self.groups}
        for group in self.groups:
            new = twins[group.id]
            new.children = tuple(twins[c.id] for c in group.children)
            owner = getattr(group, "tie_to", None)
            if owner is not None:
                if owner.id not in twins:                      # a table owner outside this circuit
                    twins[owner.id] = shallow(owner)
                new.tie_to = twins[owner.id]
        return Circuit(twins[self.root.id])

    def summary(self) -> str:
        counts = {"input": 0, "product": 0, "sum": 0}
        nodes = dict(counts)
        for g in self.groups:
            counts[g.kind] += 1
            nodes[g.kind] += g.num_nodes
        edges = sum(int(np.count_nonzero(g.weights)) for g in self.groups if isinstance(g, Sum))
        return (f"Circuit over {self.num_vars} variables (vocab {self.vocab_size}): "
                f"{len(self.groups)} groups ({counts['input']} input, {counts['product']} product, "
                f"{counts['sum']} sum), {sum(nodes.values())} nodes, {edges} sum edges, "
                f"{self.num_parameters} parameters")

    def __repr__(self) -> str:
        return f"<{self.summary()}>"


__all__ = ["Circuit", "Categorical", "Product", "Sum", "NodeGroup", "StructureError"]
