"""The upward pass: the log value of every node group, bottom-up, in one semiring.

Leaves first (one batched op per input bucket), then each layer's products (additions) and sum
buckets (one GEMM each). Parameter tables are exponentiated once per pass, not once per layer:
a homogeneous HMM reuses one transition table at every position.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..types import Evidence
from .candidates import observed_candidate_term
from .kernels import WeightTable
from .layout import InputBucket, SumBucket
from .semiring import Semiring
from .tables import PassTables

__all__ = ["upward"]


def upward(engine, evidence: Evidence, tables: PassTables, semiring: Semiring,
           keep_all: bool = True) -> list[torch.Tensor | None]:
    """Log value ``[B, K]`` of every group of ``engine`` (a :class:`~.engine.CircuitEngine`), indexed
    like ``circuit.groups``.

    With ``keep_all=False`` only the root's value is kept (the others are None): each value is
    dropped after its last reader, so a pass holds a few layers' values at a time instead of all of
    them. Sampling and MAP need every value, for their top-down walk.
    """
    layout = engine.layout
    values: list[torch.Tensor | None] = [None] * layout.num_groups
    # Whether every value computed so far is finite: while it holds, sum layers whose weights cannot
    # underflow skip the all -inf row guards (the clamped shift, the guarded log's backward). It
    # stops holding at a -inf leaf (impossible evidence, a -inf potential) or at the first table with
    # (near-)zero weights.
    finite = semiring.tracks_finiteness
    for b, bucket in enumerate(layout.input_buckets):
        leaves = _input_bucket(engine, b, bucket, evidence, tables, semiring)
        if finite and not _leaves_surely_finite(bucket, evidence, tables):
            finite = leaves.detach().amin().item() > -math.inf           # one reduction, no [B, G, K] mask
        for g, value in zip(bucket.groups, leaves.unbind(1)):
            values[g] = value
    for position, layer in enumerate(layout.layers):
        for step in layer.products:
            out = None
            for j, child in enumerate(step.children):
                edges = engine.index.product_edges(step.group, j)
                term = values[child] if edges is None else values[child][:, edges]
                out = term if out is None else out + term
            values[step.group] = out
        for bucket in layer.sums:
            finite = finite and not any(t.may_underflow for t in _bucket_tables(bucket, tables))
            if len(bucket.groups) == 1:
                values[bucket.groups[0]] = semiring.mix_one(_children(values, bucket.children[0]),
                                                            tables.sum(bucket.sources[0]), finite)
                continue
            out = _sum_bucket(bucket, values, tables, semiring, finite)
            for g, value in zip(bucket.groups, out.unbind(1)):
                values[g] = value
        if not keep_all:
            for g in layout.last_read[position]:
                values[g] = None
    return values


def _leaves_surely_finite(bucket: InputBucket, ev: Evidence, tables: PassTables) -> bool:
    """Leaves from observed tokens (and the 0 of an unobserved position) are finite when no emission
    probability is (near) zero; only evidence and potentials can add a -inf."""
    if ev.soft is not None or ev.candidates is not None or ev.node_potentials is not None:
        return False
    return not any(tables.input(s).may_underflow for s in set(bucket.sources))


def _input_bucket(engine, b: int, bucket: InputBucket, ev: Evidence, tables: PassTables,
                  semiring: Semiring) -> torch.Tensor:
    """Leaf values ``[B, G, K]`` of one bucket of input groups."""
    shared = bucket.shared_source
    if shared is not None:
        table = tables.input(shared)                                         # [K, V]
    else:
        table = WeightTable.stack([tables.input(s) for s in bucket.sources])  # [G, K, V]
    tokens, observed, soft, cand = ev.tokens, ev.observed, ev.soft, ev.candidates   # cand: [B, n, k] or None
    variables = engine.index.bucket_variables(b)                              # [G], None: variables 0..n-1
    if variables is not None:
        tokens, observed = tokens[:, variables], observed[:, variables]
        soft = soft[:, variables] if soft is not None else None              # [B, G, V]
        cand = cand[:, variables] if cand is not None else None              # [B, G, k]
    any_observed, all_observed = bool(observed.any()), bool(observed.all())

    observed_value = None
    if any_observed:
        if shared is not None:
            # Rows of a contiguous [V, K] gather (and scatter back in backward) faster than strided
            # columns, and keep the leaves contiguous for every op downstream.
            observed_value = F.embedding(tokens, table.log_t)                        # [B, G, K]
        else:
            observed_value = table.log.transpose(1, 2)[engine.index.bucket_rows(b), tokens]
        if soft is not None:
            observed_value = observed_value + soft.gather(2, tokens.unsqueeze(-1))
        elif cand is not None:
            observed_value = observed_value + observed_candidate_term(tokens, cand).unsqueeze(-1)
    if all_observed:
        leaves = observed_value
    else:
        if cand is not None:                                                  # O(k·K) per position, not O(V·K)
            free_value = semiring.candidate_leaves(cand, table, shared is not None)
        elif soft is not None:
            free_value = semiring.soft_leaves(soft, table, shared is not None)
        else:
            free_value = semiring.free_leaves(table, tokens.shape[0], len(bucket.groups))
        leaves = free_value if not any_observed else torch.where(observed.unsqueeze(-1), observed_value, free_value)
    if ev.node_potentials is not None:
        start = engine.layout.input_node_offset[bucket.groups[0]]
        width = len(bucket.groups) * bucket.num_nodes
        leaves = leaves + ev.node_potentials[:, start:start + width].reshape(leaves.shape)
    return leaves


def _children(values, children: list[int]) -> torch.Tensor:
    """The concatenated values [B, C] of a sum group's children."""
    return torch.cat([values[c] for c in children], dim=1) if len(children) > 1 else values[children[0]]


def _bucket_tables(bucket: SumBucket, tables: PassTables) -> list[WeightTable]:
    if bucket.shared_source is not None:
        return [tables.sum(bucket.shared_source)]
    return [tables.sum(s) for s in bucket.sources]


def _sum_bucket(bucket: SumBucket, values, tables: PassTables, semiring: Semiring, finite: bool) -> torch.Tensor:
    """Values ``[B, G, K]`` of one bucket of same-shape sum groups."""
    inputs = [_children(values, children) for children in bucket.children]
    x = inputs[0].unsqueeze(1) if len(inputs) == 1 else torch.stack(inputs, dim=1)   # [B, G, C]
    if bucket.shared_source is not None:
        return semiring.mix(x, tables.sum(bucket.shared_source), True, finite)       # [K, C] or [B, K, C]
    group_tables = [tables.sum(s) for s in bucket.sources]
    if any(t.log.dim() == 3 for t in group_tables):
        batch = x.shape[0]
        group_tables = [t if t.log.dim() == 3 else
                        WeightTable(t.log.expand(batch, *t.log.shape), t.probs.expand(batch, *t.probs.shape),
                                    t.may_underflow) for t in group_tables]
        stacked = WeightTable.stack(group_tables, dim=1)                      # [B, G, K, C]
    else:
        stacked = WeightTable.stack(group_tables)                             # [G, K, C]
    return semiring.mix(x, stacked, False, finite)
