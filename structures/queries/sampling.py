"""Exact joint samples and max-product (MAP) completions: an upward pass, then a top-down walk.

In a smooth, decomposable circuit a top-down walk that picks one child at every sum node and all
children at every product node reaches each variable exactly once, and picking sum children in
proportion to weight × child value draws from the exact posterior. Picking the argmax instead
gives the max-product completion.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..compile.kernels import gumbel_argmax
from ..compile.module import CompiledCircuit, Evidence, LogParams
from ..nodes import Categorical, Product, Sum
from .evidence import check_log_params, make_evidence
from .inference import raise_if_impossible


def sample(model: CompiledCircuit, x=None, mask=None, soft_evidence=None, num_samples: int | None = None,
           generator: torch.Generator | None = None, *, node_potentials=None, log_params=None) -> torch.Tensor:
    """Exact samples of the unobserved positions given the observed ones and the evidence.

    Returns ``[B, n]`` (observed positions copied from ``x``), or ``[num_samples, B, n]``.
    With no batched argument, B = 1.
    """
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    evidence = make_evidence(model, x, mask, soft_evidence, node_potentials)
    batch = evidence.batch_size
    repeats = num_samples or 1
    check_log_params(model, log_params, batch)
    if repeats > 1:
        evidence = _repeat(evidence, repeats)
        if log_params is not None:
            log_params = LogParams([t.repeat(repeats, 1, 1) if t.dim() == 3 else t for t in log_params.sums],
                                   log_params.inputs)
    with torch.no_grad():
        tables = model.pass_tables(log_params)
        lp = tables.log_params
        values = model.upward(evidence, semiring="sum", tables=tables)
        raise_if_impossible(values[model.layout.root][:, 0], "sample")
        tokens = _top_down(model, values, evidence, lp, lambda logits: gumbel_argmax(logits, generator))
    if num_samples is None:
        return tokens
    return tokens.reshape(repeats, batch, model.num_vars)


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
        tables = model.pass_tables(log_params)
        lp = tables.log_params
        values = model.upward(evidence, semiring="max", tables=tables)
        raise_if_impossible(values[model.layout.root][:, 0], "map")
        tokens = _top_down(model, values, evidence, lp, lambda logits: logits.argmax(-1))
        full = Evidence(tokens, torch.ones_like(evidence.observed), evidence.soft, evidence.node_potentials)
        score = model.upward(full, tables=tables)[model.layout.root][:, 0]
    return tokens, score


def _repeat(ev: Evidence, repeats: int) -> Evidence:
    def rep(t):
        return None if t is None else t.repeat(repeats, *([1] * (t.dim() - 1)))
    return Evidence(rep(ev.tokens), rep(ev.observed), rep(ev.soft), rep(ev.node_potentials))


def _top_down(model: CompiledCircuit, values, evidence: Evidence, lp: LogParams,
              choose: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    groups = model._circuit.groups
    layout = model.layout
    batch = evidence.batch_size
    device = evidence.tokens.device
    index = {g.id: i for i, g in enumerate(groups)}
    active: list[torch.Tensor | None] = [None] * len(groups)
    active[layout.root] = torch.ones(batch, 1, dtype=torch.bool, device=device)
    tokens = evidence.tokens.clone()

    def reach(child: int, rows: torch.Tensor, nodes: torch.Tensor) -> None:
        if active[child] is None:
            active[child] = torch.zeros(batch, groups[child].num_nodes, dtype=torch.bool, device=device)
        active[child][rows, nodes] = True

    for i in reversed(range(len(groups))):
        if active[i] is None:
            continue
        rows, nodes = active[i].nonzero(as_tuple=True)                  # the (sample, node) pairs reached
        if rows.numel() == 0:
            continue
        g = groups[i]
        children = [index[c.id] for c in g.children]
        if isinstance(g, Sum):
            x = torch.cat([values[c] for c in children], dim=1)          # [B, C]
            table = lp.sums[layout.group_sum_source[i]]
            weights = table[nodes] if table.dim() == 2 else table[rows, nodes]
            pick = choose(weights + x[rows])                             # [A] over the concatenated children
            start = 0
            for c in children:
                width = groups[c].num_nodes
                hit = (pick >= start) & (pick < start + width)
                reach(c, rows[hit], pick[hit] - start)
                start += width
        elif isinstance(g, Product):
            for j, c in enumerate(children):
                edges = getattr(model, f"edges_{i}_{j}", None)               # absent: identity edges
                reach(c, rows, nodes if edges is None else edges[nodes])
        elif isinstance(g, Categorical):
            free = ~evidence.observed[rows, g.var]
            rows, nodes = rows[free], nodes[free]
            if rows.numel() == 0:
                continue
            logits = lp.inputs[layout.group_input_source[i]][nodes]      # [A, V]
            if evidence.soft is not None:
                logits = logits + evidence.soft[rows, g.var]
            tokens[rows, g.var] = choose(logits)
    return tokens

