"""Candidate-restricted soft evidence: each position keeps k candidate tokens, the rest are -inf.

At large vocabularies (V ≈ 10^5) the dense leaves cost a [B·n, V] @ [V, K] product per pass. When a
position's evidence is -inf outside k candidate tokens, the leaf of its node z is

    log Σ_{j<k} g_z(ids[j]) · exp(log_potentials[j]),

a weighted sum of k gathered rows of the transposed emission table: O(k·K) per position instead of
O(V·K). ``embedding_bag`` fuses the gather and the weighted sum, so nothing of size [B, n, k, K] is
materialized, in the forward pass or in the backward pass (which gives the gradients w.r.t. the
potentials, i.e. the marginals, and w.r.t. the emission table).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..logspace import guarded_log, stable_shift
from ..types import CandidateEvidence
from .kernels import WeightTable

__all__ = ["sum_candidate_leaves", "max_candidate_leaves", "observed_candidate_term"]


def observed_candidate_term(tokens: torch.Tensor, cand: CandidateEvidence) -> torch.Tensor:
    """[B, G] the evidence ``e[b, g, tokens[b, g]]`` at observed positions: log Σ of the potentials of
    the candidate slots holding the token (-inf when none does). Differentiable: its gradient puts
    each slot's share of that sum on it (1 on the one slot that holds the token)."""
    match = cand.ids == tokens.unsqueeze(-1)                                # [B, G, k]
    pot = cand.log_potentials.masked_fill(~match, float("-inf"))
    m = stable_shift(pot)                                                   # [B, G, 1]
    return guarded_log(torch.exp(pot - m).sum(-1)) + m.squeeze(-1)


def _flat(cand: CandidateEvidence, shared: bool):
    """The candidates as N = B·G rows: ids [N, k], potentials [N, k], and each row's table [N]
    (its group, or 0 when one ``shared`` table serves every group)."""
    batch, groups, k = cand.ids.shape
    group = torch.arange(groups, device=cand.ids.device).repeat(batch)      # [N] group of each (b, g)
    table_of = torch.zeros_like(group) if shared else group
    return cand.ids.reshape(-1, k), cand.log_potentials.reshape(-1, k), table_of


def sum_candidate_leaves(cand: CandidateEvidence, table: WeightTable, shared: bool) -> torch.Tensor:
    """Leaf values [B, G, K] of unobserved positions under candidate evidence ``cand`` [B, G, k]:
    ``log Σ_j g_z(ids[j]) · exp(pot[j])``. ``table`` is the bucket's emission table: [K, V]
    (``shared``) or one per group [G, K, V]."""
    batch, groups, _ = cand.ids.shape
    vocab, nodes = table.log.shape[-1], table.log.shape[-2]
    ids, pot, table_of = _flat(cand, shared)
    rows = ids + vocab * table_of.unsqueeze(-1)                             # rows of the flat [(G·)V, K] table
    m = stable_shift(pot)                                                   # [N, 1]
    weights = torch.exp(pot - m)
    s = F.embedding_bag(rows, table.probs_t.reshape(-1, nodes), per_sample_weights=weights, mode="sum")
    y = guarded_log(s) + m                                                  # [N, K]
    if table.may_underflow:
        log3 = table.log.unsqueeze(0) if shared else table.log              # [1 or G, K, V]
        y = _repair(y, s, ids, pot, log3, table_of)
    return y.reshape(batch, groups, nodes)


def max_candidate_leaves(cand: CandidateEvidence, table: WeightTable, shared: bool,
                         max_elements: int = 1 << 24) -> torch.Tensor:
    """Max-product leaves [B, G, K]: ``max_j log g_z(ids[j]) + pot[j]``, in chunks of rows that keep
    the [c, K, k] intermediate under ``max_elements``."""
    batch, groups, k = cand.ids.shape
    nodes = table.log.shape[-2]
    ids, pot, table_of = _flat(cand, shared)
    log3 = table.log.unsqueeze(0) if shared else table.log                  # [1 or G, K, V]
    z = torch.arange(nodes, device=ids.device).view(1, -1, 1)
    chunk = max(1, max_elements // max(1, nodes * k))
    outs = []
    for start in range(0, ids.shape[0], chunk):
        sl = slice(start, start + chunk)
        terms = log3[table_of[sl].view(-1, 1, 1), z, ids[sl].unsqueeze(1)]  # [c, K, k]
        outs.append((terms + pot[sl].unsqueeze(1)).amax(-1))
    out = torch.cat(outs) if outs else pot.new_empty(0, nodes)
    return out.reshape(batch, groups, nodes)


def _repair(y, s, ids, pot, log3, group) -> torch.Tensor:
    """Recompute by log-sum-exp the leaves whose shifted sum underflowed (the candidates with the
    largest potentials have probability ~0 under that node; see ``kernels._repair_underflow``)."""
    flagged = s.detach() < torch.finfo(s.dtype).tiny
    if not bool(flagged.any()):
        return y
    n, z = flagged.nonzero(as_tuple=True)                                   # [A] each
    terms = log3[group[n].unsqueeze(-1), z.unsqueeze(-1), ids[n]] + pot[n]  # [A, k]
    possible = torch.isfinite(terms.detach()).any(-1)                       # all -inf: a true zero
    if not bool(possible.any()):
        return y
    n, z, terms = n[possible], z[possible], terms[possible]
    return y.index_put((n, z), torch.logsumexp(terms, dim=-1))
