"""The data types that cross the core's boundaries: what a query is asked about (:class:`Evidence`,
:class:`CandidateEvidence`) and the parameters it runs with (:class:`LogParams`).

They hold tensors and nothing else of the engine; :mod:`structures.queries.evidence` checks raw
arguments into an :class:`Evidence`, and the compiled engine (:mod:`structures.compile`) reads them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .logspace import guarded_log, stable_shift

__all__ = ["LogParams", "Evidence", "CandidateEvidence"]


@dataclass
class LogParams:
    """Normalized log-parameters: ``sums[t]`` is [K, C] (or per sample [B, K, C]) for sum table t,
    ``inputs[t]`` is [K, V] for input table t. Adapters produce modified copies of these."""
    sums: list[torch.Tensor]
    inputs: list[torch.Tensor]

    def detach(self) -> "LogParams":
        return LogParams([t.detach() for t in self.sums], [t.detach() for t in self.inputs])

    def rows(self, index: torch.Tensor) -> "LogParams":
        """Per-sample sum tables gathered to batch rows ``index`` (shared tables are left alone)."""
        return LogParams([t[index] if t.dim() == 3 else t for t in self.sums], self.inputs)

    def repeat(self, times: int) -> "LogParams":
        """Per-sample sum tables repeated ``times`` along the batch, like :meth:`Evidence.repeat`."""
        if times == 1:
            return self
        return LogParams([t.repeat(times, 1, 1) if t.dim() == 3 else t for t in self.sums], self.inputs)


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


@dataclass
class Evidence:
    """What a query is asked about, checked: build it with ``model.evidence(x, observed, ...)``
    (:func:`structures.queries.evidence.make_evidence`) and pass it to any number of queries in place
    of their raw arguments, so that a hot loop checks its inputs once.

    tokens [B, n] (0 where unobserved), observed [B, n] bool (True = the position's token is
    known), soft [B, n, V] log-potentials or None, node_potentials [B, num_input_nodes]
    log-potentials on input nodes or None, candidates: soft evidence restricted to k candidate
    tokens per position (a :class:`CandidateEvidence`, never together with ``soft``) or None.
    """
    tokens: torch.Tensor
    observed: torch.Tensor
    soft: torch.Tensor | None = None
    node_potentials: torch.Tensor | None = None
    candidates: CandidateEvidence | None = None

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def detach(self) -> "Evidence":
        return Evidence(self.tokens, self.observed, None if self.soft is None else self.soft.detach(),
                        None if self.node_potentials is None else self.node_potentials.detach(),
                        None if self.candidates is None else self.candidates.detach())

    def repeat(self, times: int) -> "Evidence":
        """Repeated ``times`` along the batch (row b of copy r is row r·B + b)."""
        if times == 1:
            return self

        def rep(t):
            return None if t is None else t.repeat(times, *([1] * (t.dim() - 1)))
        return Evidence(rep(self.tokens), rep(self.observed), rep(self.soft), rep(self.node_potentials),
                        None if self.candidates is None else self.candidates.repeat(times))
