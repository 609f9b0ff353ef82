"""Oracles for the core's queries: a hypothesis ``Query`` as the compiled circuit's arguments, and
the brute-force reference for each of its rows (node potentials and per-sample sum tables folded
into a copy of the symbolic circuit)."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

import structures
from helpers.brute import brute_log_prob
from helpers.strategies import Query, seeds


def compiled(circuit, dtype=torch.float64):
    return structures.compile(circuit, dtype=dtype)


def kwargs(q: Query, dtype=torch.float64) -> dict:
    """The query as keyword arguments of the compiled circuit's methods."""
    def tensor(a):
        return None if a is None else torch.from_numpy(a).to(dtype)
    return dict(x=torch.from_numpy(q.x), observed=torch.from_numpy(q.observed), soft_evidence=tensor(q.soft),
                node_potentials=tensor(q.potentials))


def reference(circuit, model, q: Query, b: int, sum_tables=None):
    """Brute-force arguments ``(circuit, x, observed, soft)`` for row ``b``: a copy of the symbolic
    ``circuit`` with the row's node potentials (and per-row sum tables, log [K, C] each) folded into
    its parameters. Only the model's layout is read: which group owns table t, where a group's
    nodes sit on the node-potential axis."""
    if q.potentials is None and sum_tables is None:
        return circuit, q.x[b], q.observed[b], None if q.soft is None else q.soft[b]
    circuit = circuit.copy()                                  # same group order as circuit.groups
    groups = circuit.groups
    for t, i in enumerate(model.layout.sum_sources if sum_tables is not None else []):
        groups[i].weights = sum_tables[t].double().exp().numpy()
    if q.potentials is not None:
        # A potential on an input node scales that node's distribution; brute force only multiplies,
        # so the unnormalized table is set directly (and untied: potentials differ per group).
        scaled = {i: groups[i].probs * np.exp(q.potentials[b, o:o + groups[i].num_nodes])[:, None]
                  for i, o in model.layout.input_node_offset.items()}
        for i, probs in scaled.items():
            groups[i].tie_to, groups[i]._probs = None, probs
    return circuit, q.x[b], q.observed[b], None if q.soft is None else q.soft[b]


def brute_query_rows(circuit, model, q: Query, brute=brute_log_prob, sum_tables=None):
    """``brute`` on every row; ``sum_tables`` as given to the model ([K, C] or per row [B, K, C])."""
    def own(b):
        return None if sum_tables is None else row_tables(sum_tables, b)
    return np.array([brute(*reference(circuit, model, q, b, own(b))) for b in range(q.batch)])


def random_sum_tables(model, data, batch: int) -> list[torch.Tensor]:
    """The model's sum tables, some replaced by random per-sample tables [batch, K, C] (same support)."""
    generator = torch.Generator().manual_seed(data.draw(seeds))
    tables = []
    for t, table in enumerate(model.log_params().sums):
        if data.draw(st.booleans()):
            noise = torch.randn((batch, *table.shape), generator=generator, dtype=table.dtype)
            support = model.sums[t].support
            table = torch.log_softmax((table + noise).masked_fill(~support, -torch.inf), -1)
        tables.append(table.detach())
    return tables


def row_tables(tables: list[torch.Tensor], b: int) -> list[torch.Tensor]:
    """Row ``b``'s own [K, C] tables."""
    return [t[b] if t.dim() == 3 else t for t in tables]
