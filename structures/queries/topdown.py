"""The top-down walk shared by sampling and MAP: from the root to the leaves, one choice per reached
sum node, all batch rows at once.

In a smooth, decomposable circuit a walk that picks one child at every sum node and all children at
every product node reaches each variable exactly once; picking sum children in proportion to
weight × child value draws from the exact posterior, picking the argmax gives the max-product
completion. Which of the two is the semiring's :meth:`~structures.compile.Semiring.choose`.
"""
from __future__ import annotations

import torch

from ..compile.engine import CircuitEngine
from ..compile.semiring import Semiring
from ..types import Evidence, LogParams

__all__ = ["top_down"]


def top_down(model: CircuitEngine, values: list[torch.Tensor], evidence: Evidence, lp: LogParams,
             semiring: Semiring, generator: torch.Generator | None = None) -> torch.Tensor:
    """Tokens [B, n]: observed positions from ``evidence``, the others chosen by the walk over the
    upward ``values`` of every group (computed in ``semiring`` with the parameters ``lp``).

    A sample reaches at most one node of each group (two nodes of one scope would need a product
    with overlapping children below their last common ancestor), so the walk carries, per group,
    the reached node of every row as a [B] index (-1: not reached) and never asks which rows are
    active: no host sync per group. Rows a group does not reach are computed along and discarded.
    """
    layout = model.layout
    batch = evidence.batch_size
    device = evidence.tokens.device
    rows = torch.arange(batch, device=device)
    node_of: list[torch.Tensor | None] = [None] * layout.num_groups     # per group, [B] node index or -1
    node_of[layout.root] = torch.zeros(batch, dtype=torch.long, device=device)
    tokens = evidence.tokens.clone()

    def reach(child: int, nodes: torch.Tensor) -> None:
        """Rows with ``nodes >= 0`` reach ``child`` at that node; rows already there keep theirs."""
        seen = node_of[child]
        node_of[child] = nodes if seen is None else torch.where(nodes >= 0, nodes, seen)

    for i in reversed(range(layout.num_groups)):
        nodes = node_of[i]
        if nodes is None:
            continue
        reached = nodes >= 0
        at = nodes.clamp(min=0)                                         # a valid index for unreached rows
        spec = layout.groups[i]
        if spec.kind == "sum":
            children = spec.children
            x = torch.cat([values[c] for c in children], dim=1) if len(children) > 1 else values[children[0]]
            table = lp.sums[layout.group_sum_source[i]]
            weights = table[at] if table.dim() == 2 else table[rows, at]  # [B, C]
            pick = torch.where(reached, semiring.choose(weights + x, generator), -1)   # over the concatenation
            start = 0
            for c in children:
                width = layout.groups[c].num_nodes
                inside = (pick >= start) & (pick < start + width)
                reach(c, torch.where(inside, pick - start, -1))
                start += width
        elif spec.kind == "product":
            for j, c in enumerate(spec.children):
                edges = model.index.product_edges(i, j)                       # None: identity edges
                reach(c, nodes if edges is None else torch.where(reached, edges[at], -1))
        else:
            _choose_tokens(tokens, i, spec.var, reached, at, evidence, lp, layout, semiring, generator)
    return tokens


def _choose_tokens(tokens, group: int, var: int, reached, at, evidence: Evidence, lp: LogParams, layout,
                   semiring: Semiring, generator) -> None:
    """An input group's tokens, in place, for the rows that reach it and need one (found once)."""
    (free,) = (reached & ~evidence.observed[:, var]).nonzero(as_tuple=True)
    if free.numel() == 0:
        return
    table = lp.inputs[layout.group_input_source[group]]                     # [K, V]
    leaf_nodes = at[free]
    if evidence.candidates is not None:                                    # choose among the k candidates
        ids = evidence.candidates.ids[free, var]                           # [A, k]
        scores = table[leaf_nodes.unsqueeze(-1), ids] + evidence.candidates.log_potentials[free, var]
        tokens[free, var] = ids.gather(-1, semiring.choose(scores, generator).unsqueeze(-1)).squeeze(-1)
        return
    scores = table[leaf_nodes]                                             # [A, V]
    if evidence.soft is not None:
        scores = scores + evidence.soft[free, var]
    tokens[free, var] = semiring.choose(scores, generator)
