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

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .kernels import WeightTable, guarded_log, stable_shift

__all__ = ["CandidateEvidence", "candidate_leaves", "observed_candidate_term"]


@dataclass(frozen=True)
class CandidateEvidence:
    """Soft evidence restricted to candidate tokens: the sparse form of soft evidence that is -inf
    outside k tokens per position.

    ids [B, n, k] long: position i of row b may only take the tokens ``ids[b, i]``;
    log_potentials [B, n, k] float: their log-potentials (-inf allowed, e.g. a banned token).

    It means the dense evidence ``e[b, i, v] = log Σ_{j: ids[b, i, j] = v} exp(log_potentials[b, i, j])``
    (-inf for a token that is no candidate), so a token listed twice counts with the sum of its
    potentials. Like dense evidence it applies at every position: at an observed position with token
    x it adds ``e[b, i, x]`` (-inf, an impossible event, when x is no candidate there). Queries given
    it cost O(n·k·K) at the leaves; marginals come back over the candidates, [B, n, k], and samples
    as token ids. (A max-product pass sees the slots one by one: ``map`` first :meth:`merged`
    duplicates, which a sum never needs.)
    """
    ids: torch.Tensor
    log_potentials: torch.Tensor

    @property
    def num_candidates(self) -> int:
        return self.ids.shape[-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.log_potentials.dtype

    @property
    def shape(self) -> torch.Size:
        return self.log_potentials.shape

    def __getitem__(self, index) -> "CandidateEvidence":
        return CandidateEvidence(self.ids[index], self.log_potentials[index])

    def detach(self) -> "CandidateEvidence":
        return CandidateEvidence(self.ids, self.log_potentials.detach())

    def repeat(self, times: int) -> "CandidateEvidence":
        """Repeated ``times`` along the batch (row b of copy r is row r·B + b)."""
        return CandidateEvidence(self.ids.repeat(times, 1, 1), self.log_potentials.repeat(times, 1, 1))

    def scatter(self, values: torch.Tensor, vocab: int) -> torch.Tensor:
        """Per-candidate ``values`` [B, n, k] summed into a dense [B, n, vocab] tensor (0 elsewhere):
        marginals over the candidates -> marginals over the vocabulary."""
        return values.new_zeros(*values.shape[:-1], vocab).scatter_add_(-1, self.ids, values)

    def merged(self) -> "CandidateEvidence":
        """The same evidence with every token held by one slot: a token listed twice gets the
        log-sum of its potentials in its first slot and -inf in the others. Max-product needs it
        (a max over slots would see duplicates separately); sums and samples do not."""
        ids, order = self.ids.sort(dim=-1)
        pot = self.log_potentials.gather(-1, order)
        first = torch.ones_like(ids, dtype=torch.bool)
        first[..., 1:] = ids[..., 1:] != ids[..., :-1]                       # each run of equal ids starts here
        run = first.long().cumsum(-1) - 1                                   # [B, n, k] run of each slot
        # each run shifted by its own max: a potential far below the position's max keeps its value
        top = torch.full_like(pot, float("-inf")).scatter_reduce(-1, run, pot, "amax")
        shift = top.clamp_min(torch.finfo(pot.dtype).min).gather(-1, run)
        total = torch.zeros_like(pot).scatter_add(-1, run, torch.exp(pot - shift))
        merged = guarded_log(total).gather(-1, run) + shift
        return CandidateEvidence(ids, torch.where(first, merged, torch.full_like(merged, float("-inf"))))

    def dense(self, vocab: int) -> torch.Tensor:
        """The equivalent dense soft evidence [B, n, vocab] (-inf outside the candidates)."""
        m = stable_shift(self.log_potentials)
        total = self.scatter(torch.exp(self.log_potentials - m), vocab)
        return guarded_log(total) + m


def observed_candidate_term(tokens: torch.Tensor, cand: CandidateEvidence) -> torch.Tensor:
    """[B, G] the evidence ``e[b, g, tokens[b, g]]`` at observed positions: log Σ of the potentials of
    the candidate slots holding the token (-inf when none does). Differentiable: its gradient puts
    each slot's share of that sum on it (1 on the one slot that holds the token)."""
    match = cand.ids == tokens.unsqueeze(-1)                                # [B, G, k]
    pot = cand.log_potentials.masked_fill(~match, float("-inf"))
    m = stable_shift(pot)                                                   # [B, G, 1]
    return guarded_log(torch.exp(pot - m).sum(-1)) + m.squeeze(-1)


def candidate_leaves(cand: CandidateEvidence, table: WeightTable, shared: bool, semiring: str,
                     max_elements: int = 1 << 24) -> torch.Tensor:
    """Leaf values [B, G, K] of unobserved positions under candidate evidence ``cand`` [B, G, k].

    ``table`` is the bucket's emission table: [K, V] (``shared``) or one per group [G, K, V].
    """
    batch, groups, k = cand.ids.shape
    vocab, nodes = table.log.shape[-1], table.log.shape[-2]
    group = torch.arange(groups, device=cand.ids.device).repeat(batch)      # [N] group of each (b, g)
    ids = cand.ids.reshape(-1, k)                                           # [N, k], N = B·G
    pot = cand.log_potentials.reshape(-1, k)
    log3 = table.log.unsqueeze(0) if shared else table.log                  # [1 or G, K, V]
    if semiring == "max":
        out = _max_leaves(ids, pot, log3, group if not shared else torch.zeros_like(group), max_elements)
        return out.reshape(batch, groups, nodes)
    rows = ids if shared else ids + vocab * group.unsqueeze(-1)             # rows of the flat [(G·)V, K] table
    m = stable_shift(pot)                                                   # [N, 1]
    weights = torch.exp(pot - m)
    s = F.embedding_bag(rows, table.probs_t.reshape(-1, nodes), per_sample_weights=weights, mode="sum")
    y = guarded_log(s) + m                                                  # [N, K]
    if table.may_underflow:
        y = _repair(y, s, ids, pot, log3, group if not shared else torch.zeros_like(group))
    return y.reshape(batch, groups, nodes)


def _max_leaves(ids, pot, log3, group, max_elements: int) -> torch.Tensor:
    """max_j log g_z(ids[n, j]) + pot[n, j]: [N, K], in chunks of N that keep [c, K, k] bounded."""
    nodes, k = log3.shape[1], ids.shape[1]
    z = torch.arange(nodes, device=ids.device).view(1, -1, 1)
    chunk = max(1, max_elements // max(1, nodes * k))
    outs = []
    for start in range(0, ids.shape[0], chunk):
        sl = slice(start, start + chunk)
        terms = log3[group[sl].view(-1, 1, 1), z, ids[sl].unsqueeze(1)]     # [c, K, k]
        outs.append((terms + pot[sl].unsqueeze(1)).amax(-1))
    return torch.cat(outs) if outs else pot.new_empty(0, nodes)


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
