"""Exact joint samples and max-product (MAP) completions: an upward pass, then a top-down walk.

In a smooth, decomposable circuit a top-down walk that picks one child at every sum node and all
children at every product node reaches each variable exactly once, and picking sum children in
proportion to weight × child value draws from the exact posterior. Picking the argmax instead
gives the max-product completion.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import torch

from ..compile.kernels import gumbel_argmax
from ..compile.module import CompiledCircuit, Evidence, LogParams
from ..nodes import Categorical, Product, Sum
from .evidence import check_log_params, make_evidence
from .inference import constant_tables, differentiable_evidence, raise_if_impossible


class SampleAndMarginals(NamedTuple):
    """``sample`` [B, n] or [S, B, n]; ``marginals`` [B, n, V] (over the candidates, [B, n, k], with
    :class:`CandidateEvidence`); ``log_normalizer`` [B] log Z of the evidence."""
    sample: torch.Tensor
    marginals: torch.Tensor
    log_normalizer: torch.Tensor


def sample(model: CompiledCircuit, x=None, mask=None, soft_evidence=None, num_samples: int | None = None,
           generator: torch.Generator | None = None, *, node_potentials=None, log_params=None) -> torch.Tensor:
    """Exact samples of the unobserved positions given the observed ones and the evidence.

    Returns ``[B, n]`` (observed positions copied from ``x``), or ``[num_samples, B, n]``.
    With no batched argument, B = 1.
    """
    _check_num_samples(num_samples)
    evidence = make_evidence(model, x, mask, soft_evidence, node_potentials)
    batch = evidence.batch_size
    repeats = num_samples or 1
    check_log_params(model, log_params, batch)
    evidence, log_params = _repeat(evidence, repeats), _repeat_params(log_params, repeats)
    with torch.no_grad():
        tables = model.pass_tables(log_params)
        lp = tables.log_params
        values = model.upward(evidence, semiring="sum", tables=tables)
        raise_if_impossible(values[model.layout.root][:, 0], "sample")
        tokens = _top_down(model, values, evidence, lp, lambda logits: gumbel_argmax(logits, generator))
    return tokens if num_samples is None else tokens.reshape(repeats, batch, model.num_vars)


def sample_and_marginals(model: CompiledCircuit, x=None, mask=None, soft_evidence=None,
                         num_samples: int | None = None, generator: torch.Generator | None = None, *,
                         node_potentials=None, log_params=None) -> SampleAndMarginals:
    """Exact samples (as :func:`sample`), the exact marginals (as :func:`~structures.queries.marginals`)
    and log Z, from ONE upward pass: the pass runs with the evidence requiring grad, its backward
    gives the marginals, and the top-down walk reuses its stored values."""
    _check_num_samples(num_samples)
    evidence = make_evidence(model, x, mask, soft_evidence, node_potentials)
    batch = evidence.batch_size
    repeats = num_samples or 1
    check_log_params(model, log_params, batch)
    tables = constant_tables(model, log_params)
    with torch.enable_grad():
        leaf = differentiable_evidence(model, evidence)
        values = model.upward(evidence, tables=tables)
        log_z = values[model.layout.root][:, 0]
        raise_if_impossible(log_z, "sample_and_marginals")
        (marginals,) = torch.autograd.grad(log_z.sum(), leaf)
    with torch.no_grad():
        values = [None if v is None else v.detach() for v in values]
        if repeats > 1:                                       # S draws per row: the stored values repeated
            values = [None if v is None else v.repeat(repeats, *([1] * (v.dim() - 1))) for v in values]
        evidence = _repeat(dataclasses.replace(evidence, soft=None if evidence.soft is None else evidence.soft.detach(),
                                               candidates=None if evidence.candidates is None
                                               else evidence.candidates.detach()), repeats)
        lp = _repeat_params(tables.log_params, repeats)
        tokens = _top_down(model, values, evidence, lp, lambda logits: gumbel_argmax(logits, generator))
    sample = tokens if num_samples is None else tokens.reshape(repeats, batch, model.num_vars)
    return SampleAndMarginals(sample, marginals, log_z.detach())


def map_assignment(model: CompiledCircuit, x=None, mask=None, soft_evidence=None, *, node_potentials=None,
                   log_params=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The max-product completion of the unobserved positions and its log-probability.

    Returns ``(assignment [B, n], log_prob [B])`` where ``log_prob`` is the exact
    ``log_prob(assignment)`` (with the soft evidence). Max-product maximizes over the circuit's
    latent choices too: for deterministic circuits (and circuits without latent sums) the
    completion is the exact MAP; for latent-variable circuits (HMMs) it is the MAP of the joint
    over tokens and latent path, Viterbi-style.
    """
    evidence = make_evidence(model, x, mask, soft_evidence, node_potentials)
    check_log_params(model, log_params, evidence.batch_size)
    with torch.no_grad():
        if evidence.candidates is not None:
            evidence.candidates = evidence.candidates.merged()
        tables = model.pass_tables(log_params)
        lp = tables.log_params
        values = model.upward(evidence, semiring="max", tables=tables)
        raise_if_impossible(values[model.layout.root][:, 0], "map")
        tokens = _top_down(model, values, evidence, lp, lambda logits: logits.argmax(-1))
        full = dataclasses.replace(evidence, tokens=tokens, observed=torch.ones_like(evidence.observed))
        score = model.root_value(full, tables=tables)
    return tokens, score


def _check_num_samples(num_samples) -> None:
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")


def _repeat(ev: Evidence, repeats: int) -> Evidence:
    """The evidence repeated ``repeats`` times along the batch (row b of copy r is row r·B + b)."""
    if repeats == 1:
        return ev

    def rep(t):
        return None if t is None else t.repeat(repeats, *([1] * (t.dim() - 1)))
    return Evidence(rep(ev.tokens), rep(ev.observed), rep(ev.soft), rep(ev.node_potentials),
                    None if ev.candidates is None else ev.candidates.repeat(repeats))


def _repeat_params(log_params: LogParams | None, repeats: int) -> LogParams | None:
    """Per-sample sum tables repeated like :func:`_repeat` (shared tables are left alone)."""
    if log_params is None or repeats == 1:
        return log_params
    return LogParams([t.repeat(repeats, 1, 1) if t.dim() == 3 else t for t in log_params.sums], log_params.inputs)


def _top_down(model: CompiledCircuit, values, evidence: Evidence, lp: LogParams,
              choose: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Walk from the root to the leaves, one choice per reached sum node, all rows at once.

    In a decomposable circuit a sample reaches at most one node of each group (two nodes of one
    scope would need a product with overlapping children below their last common ancestor), so the
    walk carries, per group, the reached node of every row as a [B] index (-1: not reached) and
    never asks which rows are active: no host sync per group. Rows a group does not reach are
    computed along and discarded.
    """
    groups = model._circuit.groups
    layout = model.layout
    batch = evidence.batch_size
    device = evidence.tokens.device
    index = {g.id: i for i, g in enumerate(groups)}
    rows = torch.arange(batch, device=device)
    node_of: list[torch.Tensor | None] = [None] * len(groups)         # per group, [B] node index or -1
    node_of[layout.root] = torch.zeros(batch, dtype=torch.long, device=device)
    tokens = evidence.tokens.clone()

    def reach(child: int, nodes: torch.Tensor) -> None:
        """Rows with ``nodes >= 0`` reach ``child`` at that node; rows already there keep theirs."""
        seen = node_of[child]
        node_of[child] = nodes if seen is None else torch.where(nodes >= 0, nodes, seen)

    for i in reversed(range(len(groups))):
        nodes = node_of[i]
        if nodes is None:
            continue
        reached = nodes >= 0
        at = nodes.clamp(min=0)                                         # a valid index for unreached rows
        g = groups[i]
        children = [index[c.id] for c in g.children]
        if isinstance(g, Sum):
            x = torch.cat([values[c] for c in children], dim=1) if len(children) > 1 else values[children[0]]
            table = lp.sums[layout.group_sum_source[i]]
            weights = table[at] if table.dim() == 2 else table[rows, at]  # [B, C]
            pick = torch.where(reached, choose(weights + x), -1)        # over the concatenated children
            start = 0
            for c in children:
                width = groups[c].num_nodes
                inside = (pick >= start) & (pick < start + width)
                reach(c, torch.where(inside, pick - start, -1))
                start += width
        elif isinstance(g, Product):
            for j, c in enumerate(children):
                edges = getattr(model, f"edges_{i}_{j}", None)               # absent: identity edges
                reach(c, nodes if edges is None else torch.where(reached, edges[at], -1))
        elif isinstance(g, Categorical):
            # Leaves draw over the vocabulary: only the rows that need a token, found once.
            (free,) = (reached & ~evidence.observed[:, g.var]).nonzero(as_tuple=True)
            if free.numel() == 0:
                continue
            table = lp.inputs[layout.group_input_source[i]]              # [K, V]
            leaf_nodes = at[free]
            if evidence.candidates is not None:                            # choose among the k candidates
                ids = evidence.candidates.ids[free, g.var]                 # [A, k]
                logits = table[leaf_nodes.unsqueeze(-1), ids] + evidence.candidates.log_potentials[free, g.var]
                tokens[free, g.var] = ids.gather(-1, choose(logits).unsqueeze(-1)).squeeze(-1)
                continue
            logits = table[leaf_nodes]                                     # [A, V]
            if evidence.soft is not None:
                logits = logits + evidence.soft[free, g.var]
            tokens[free, g.var] = choose(logits)
    return tokens

