"""The upward pass: the log value of every node group, bottom-up, in one semiring.

Leaves first (one batched op per input bucket), then each layer's products (additions) and sum
buckets (one GEMM each). Parameter tables are exponentiated once per pass, not once per layer:
a homogeneous HMM reuses one transition table at every position.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .candidates import candidate_leaves, observed_candidate_term
from .kernels import WeightTable, log_matmul_exp, log_max_product
from .layout import InputBucket, SumBucket


class PassTables:
    """Per-pass cache of the parameter tables in the forms the kernels need."""

    def __init__(self, log_params):
        self.log_params = log_params
        self._sums: dict[int, WeightTable] = {}
        self._inputs: dict[int, WeightTable] = {}

    def sum(self, t: int) -> WeightTable:
        if t not in self._sums:
            self._sums[t] = WeightTable(self.log_params.sums[t])
        return self._sums[t]

    def input(self, t: int) -> WeightTable:
        if t not in self._inputs:
            self._inputs[t] = WeightTable(self.log_params.inputs[t])
        return self._inputs[t]


def upward(model, evidence, tables: PassTables, semiring: str, keep_all: bool = True) -> list[torch.Tensor | None]:
    """Log value ``[B, K]`` of every group of ``model`` (indexed like ``circuit.groups``).

    With ``keep_all=False`` only the root's value is kept (the others are None): each value is
    dropped after its last reader, so a pass holds a few layers' values at a time instead of all of
    them (the training step's peak in ``pcdiff bench``'s memory table fell from 4 to 3 [B, L, V]
    tensors). Sampling and MAP need every value, for their top-down walk.
    """
    layout = model.layout
    values: list[torch.Tensor | None] = [None] * layout.num_groups
    # Whether every value computed so far is finite: while it holds, sum layers whose weights cannot
    # underflow skip the all -inf row guards (the clamped shift, the guarded log's backward). It
    # stops holding at a -inf leaf (impossible evidence, a -inf potential) or at the first table with
    # (near-)zero weights.
    finite = semiring == "sum"
    for b, bucket in enumerate(layout.input_buckets):
        leaves = _input_bucket(model, b, bucket, evidence, tables, semiring)
        if finite and not _leaves_surely_finite(bucket, evidence, tables):
            finite = leaves.detach().amin().item() > -math.inf           # one reduction, no [B, G, K] mask
        for g, value in zip(bucket.groups, leaves.unbind(1)):
            values[g] = value
    for position, layer in enumerate(layout.layers):
        for step in layer.products:
            out = None
            for j, child in enumerate(step.children):
                term = values[child] if step.edges[j] is None else \
                    values[child][:, getattr(model, f"edges_{step.group}_{j}")]
                out = term if out is None else out + term
            values[step.group] = out
        for bucket in layer.sums:
            finite = finite and not any(t.may_underflow for t in _bucket_tables(bucket, tables))
            if len(bucket.groups) == 1:
                values[bucket.groups[0]] = _single_sum(bucket, values, tables, semiring, finite)
                continue
            out = _sum_bucket(bucket, values, tables, semiring, finite)
            for g, value in zip(bucket.groups, out.unbind(1)):
                values[g] = value
        if not keep_all:
            for g in layout.last_read[position]:
                values[g] = None
    return values


def _leaves_surely_finite(bucket: InputBucket, ev, tables: PassTables) -> bool:
    """Leaves from observed tokens (and the 0 of an unobserved position) are finite when no emission
    probability is (near) zero; only evidence and potentials can add a -inf."""
    if ev.soft is not None or ev.candidates is not None or ev.node_potentials is not None:
        return False
    return not any(tables.input(s).may_underflow for s in set(bucket.sources))


def _input_bucket(model, b: int, bucket: InputBucket, ev, tables: PassTables, semiring: str) -> torch.Tensor:
    """Leaf values ``[B, G, K]`` of one bucket of input groups."""
    shared = bucket.shared_source
    if shared is not None:
        table = tables.input(shared)                                         # [K, V]
    else:
        table = WeightTable.stack([tables.input(s) for s in bucket.sources])  # [G, K, V]
    cand = ev.candidates                                                      # [B, n, k] or None
    if getattr(model, f"bucket_in_order_{b}"):                                # groups are variables 0..n-1
        tokens, observed, soft = ev.tokens, ev.observed, ev.soft
    else:
        variables = getattr(model, f"bucket_vars_{b}")                       # [G]
        tokens, observed = ev.tokens[:, variables], ev.observed[:, variables]
        soft = ev.soft[:, variables] if ev.soft is not None else None        # [B, G, V]
        cand = cand[:, variables] if cand is not None else None              # [B, G, k]
    any_observed, all_observed = bool(observed.any()), bool(observed.all())

    observed_value = None
    if any_observed:
        if shared is not None:
            # Rows of a contiguous [V, K] gather (and scatter back in backward) faster than strided
            # columns, and keep the leaves contiguous for every op downstream.
            observed_value = F.embedding(tokens, table.log_t)                        # [B, G, K]
        else:
            rows = getattr(model, f"bucket_rows_{b}")
            observed_value = table.log.transpose(1, 2)[rows, tokens]
        if soft is not None:
            observed_value = observed_value + soft.gather(2, tokens.unsqueeze(-1))
        elif cand is not None:
            observed_value = observed_value + observed_candidate_term(tokens, cand).unsqueeze(-1)
    if all_observed:
        leaves = observed_value
    else:
        if cand is not None:                                                  # O(k·K) per position, not O(V·K)
            free_value = candidate_leaves(cand, table, shared is not None, semiring)
        elif soft is None and semiring == "sum":
            batch = tokens.shape[0]
            free_value = table.log.new_zeros(batch, len(bucket.groups), bucket.num_nodes)  # rows sum to one
        elif soft is None:
            best = table.log.amax(-1)                                         # [K] or [G, K]
            free_value = best.expand(tokens.shape[0], len(bucket.groups), bucket.num_nodes)
        elif semiring == "sum":
            free_value = log_matmul_exp(soft, table, shared=shared is not None, finite_inputs=None)
        else:
            free_value = log_max_product(soft, table.log.unsqueeze(0) if shared is not None else table.log)
        leaves = free_value if not any_observed else torch.where(observed.unsqueeze(-1), observed_value, free_value)
    if ev.node_potentials is not None:
        start = model.layout.input_node_offset[bucket.groups[0]]
        width = len(bucket.groups) * bucket.num_nodes
        leaves = leaves + ev.node_potentials[:, start:start + width].reshape(leaves.shape)
    return leaves


def _bucket_tables(bucket: SumBucket, tables: PassTables) -> list[WeightTable]:
    if bucket.shared_source is not None:
        return [tables.sum(bucket.shared_source)]
    return [tables.sum(s) for s in bucket.sources]


def _single_sum(bucket: SumBucket, values, tables: PassTables, semiring: str, finite: bool) -> torch.Tensor:
    """Values ``[B, K]`` of a bucket holding one sum group (every layer of a chain): plain 2-D GEMM."""
    children = bucket.children[0]
    x = torch.cat([values[c] for c in children], dim=1) if len(children) > 1 else values[children[0]]  # [B, C]
    table = tables.sum(bucket.sources[0])                                    # [K, C] or [B, K, C]
    if semiring == "max":
        return log_max_product(x.unsqueeze(1), table.log.unsqueeze(-3)).squeeze(1)
    if table.log.dim() == 3:
        return log_matmul_exp(x.unsqueeze(1), table, shared=True, finite_inputs=finite).squeeze(1)
    return log_matmul_exp(x, table, shared=True, finite_inputs=finite)


def _sum_bucket(bucket: SumBucket, values, tables: PassTables, semiring: str, finite: bool) -> torch.Tensor:
    """Values ``[B, G, K]`` of one bucket of same-shape sum groups."""
    inputs = [torch.cat([values[c] for c in children], dim=1) if len(children) > 1 else values[children[0]]
              for children in bucket.children]
    x = inputs[0].unsqueeze(1) if len(inputs) == 1 else torch.stack(inputs, dim=1)   # [B, G, C]
    shared = bucket.shared_source
    if shared is not None:
        table = tables.sum(shared)                                           # [K, C] or [B, K, C]
        if semiring == "sum":
            return log_matmul_exp(x, table, shared=True, finite_inputs=finite)
        return log_max_product(x, table.log.unsqueeze(-3))
    group_tables = [tables.sum(s) for s in bucket.sources]
    if any(t.log.dim() == 3 for t in group_tables):
        batch = x.shape[0]
        group_tables = [t if t.log.dim() == 3 else
                        WeightTable(t.log.expand(batch, *t.log.shape), t.probs.expand(batch, *t.probs.shape),
                                    t.may_underflow) for t in group_tables]
        stacked = WeightTable.stack(group_tables, dim=1)                      # [B, G, K, C]
    else:
        stacked = WeightTable.stack(group_tables)                             # [G, K, C]
    if semiring == "sum":
        return log_matmul_exp(x, stacked, shared=False, finite_inputs=finite)
    return log_max_product(x, stacked.log)
