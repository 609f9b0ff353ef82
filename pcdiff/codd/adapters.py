"""Parameter adapters: let the backbone's hidden states condition the circuit (φ = adapter(hidden)).

In the CoDD paper the circuit is static: context reaches it only through the backbone's logits
(soft evidence at the leaves). An adapter adds a second channel, computed from the backbone's
hidden states of the block, in one of the two forms every compiled circuit accepts:

* ``node_potentials`` [B, num_input_nodes]: log-potentials multiplied into the input nodes (the
  latent states of each position, ``model.input_nodes_by_var``);
* ``log_params``: a :class:`structures.LogParams` whose sum tables may be per sample [B, K, C];

and a third that weighs the two experts of the product instead of changing the circuit:

* ``backbone_weight`` [B] (or a scalar) > 0: the exponent β on the backbone's per-token distributions,
  p̂ ∝ C · Π_i q_i^β (1 = the paper's product, → 0 = the circuit alone).

The protocol (write your own by following it)::

    class MyAdapter(Adapter):
        def __init__(self, model: structures.CompiledCircuit, hidden_size: int, **kw): ...
        def forward(self, model, hidden):           # hidden: [B, L, D] (or None for static adapters)
            hidden = self.check_hidden(hidden)      # type, shape and finite values, named
            return AdapterOutput(log_params=..., node_potentials=...)   # either may be None

    register_adapter("mine", MyAdapter)     # then make_adapter("mine", model, D), CoDDLayer(..., adapter="mine")

Conventions: ``forward`` is called with the compiled circuit it was built for (it may read
``model.log_params()`` so that circuit and adapter train together); returned log-parameters must
stay normalized (rows log-sum-exp to 0, structural zeros kept at -inf); an adapter should start
as the identity (its output at initialization leaves the circuit unchanged), so that a layer
begins exactly as the static circuit and can only learn to improve on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

import structures

from .checks import check_finite

__all__ = ["AdapterOutput", "Adapter", "StaticAdapter", "LatentEvidenceAdapter", "LowRankAdapter",
           "CouplingStrengthAdapter", "BackboneWeightAdapter", "ADAPTERS", "register_adapter", "make_adapter"]


@dataclass
class AdapterOutput:
    """What an adapter adds to the circuit for one batch (None = nothing)."""
    log_params: structures.LogParams | None = None
    node_potentials: torch.Tensor | None = None      # [B, num_input_nodes]
    backbone_weight: torch.Tensor | None = None      # [B] or a scalar, > 0


class Adapter(nn.Module):
    """Base class: ``adapter(model, hidden [B, L, D]) -> AdapterOutput``."""

    needs_hidden = True

    def __init__(self, model: structures.CompiledCircuit, hidden_size: int | None):
        super().__init__()
        if not isinstance(model, structures.CompiledCircuit):
            raise TypeError(f"{type(self).__name__}: model must be a structures.CompiledCircuit, "
                            f"got {type(model).__name__}")
        if self.needs_hidden and (not isinstance(hidden_size, int) or hidden_size < 1):
            raise ValueError(f"{type(self).__name__}: hidden_size must be a positive int (the backbone's D), "
                             f"got {hidden_size!r}")
        self.hidden_size = hidden_size
        self.block_length = model.num_vars

    def check_hidden(self, hidden) -> torch.Tensor:
        if not isinstance(hidden, torch.Tensor) or not hidden.is_floating_point() or hidden.dim() != 3:
            raise ValueError(f"{type(self).__name__}: hidden must be a float tensor [B, L, D], "
                             f"got {getattr(hidden, 'shape', hidden)!r}")
        if hidden.shape[1:] != (self.block_length, self.hidden_size):
            raise ValueError(f"{type(self).__name__}: hidden must have shape [B, {self.block_length}, "
                             f"{self.hidden_size}], got {tuple(hidden.shape)}")
        # a NaN or inf here would spread through every sum table or potential it feeds: refuse it by name
        try:
            check_finite(hidden, "hidden")
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}: {err} (the backbone's hidden states)") from None
        return hidden

    def forward(self, model: structures.CompiledCircuit, hidden: torch.Tensor | None) -> AdapterOutput:
        raise NotImplementedError


class StaticAdapter(Adapter):
    """No conditioning: the paper's setting. Ignores ``hidden`` (which may be None)."""

    needs_hidden = False

    def __init__(self, model, hidden_size=None):
        super().__init__(model, hidden_size)

    def forward(self, model, hidden=None) -> AdapterOutput:
        return AdapterOutput()


class LatentEvidenceAdapter(Adapter):
    """Each position's hidden state → log-potentials over that position's latent states.

    Position i owns the input nodes ``model.input_nodes_by_var[i]`` (K_i of them, K_i may differ
    by position). A linear map D → max K_i (shared by positions, or one per position with
    ``per_position``), scaled by 1/D, scores them; zero-initialized, so the adapter starts as the
    identity.
    """

    def __init__(self, model, hidden_size, per_position: bool = False):
        super().__init__(model, hidden_size)
        by_var = model.input_nodes_by_var
        width = max(len(nodes) for nodes in by_var)
        # flat input node n ← (position, slot) entry of the projection
        position = torch.cat([torch.full((len(nodes),), i) for i, nodes in enumerate(by_var)])
        slot = torch.cat([torch.arange(len(nodes)) for nodes in by_var])
        flat = torch.cat([nodes.cpu() for nodes in by_var])
        if sorted(flat.tolist()) != list(range(model.layout.num_input_nodes)):
            raise ValueError("LatentEvidenceAdapter: the circuit's input nodes do not partition by position")
        order = torch.argsort(flat)
        self.register_buffer("position", position[order], persistent=False)
        self.register_buffer("slot", slot[order], persistent=False)
        self.per_position = per_position
        rows = self.block_length if per_position else 1
        self.weight = nn.Parameter(torch.zeros(rows, hidden_size, width))  # [L or 1, D, K]
        self.bias = nn.Parameter(torch.zeros(rows, width))

    def forward(self, model, hidden) -> AdapterOutput:
        hidden = self.check_hidden(hidden).to(self.weight.dtype)
        # dividing by D keeps an optimizer step's effect on the scores independent of the width D
        scores = torch.einsum("bld,ldk->blk", hidden, self.weight.expand(self.block_length, -1, -1)) \
            / self.hidden_size + self.bias                                        # [B, L, K]
        potentials = scores[:, self.position, self.slot]                          # [B, num_input_nodes]
        return AdapterOutput(node_potentials=potentials.to(model.dtype))


class LowRankAdapter(Adapter):
    """Gated low-rank, per-sample corrections of the circuit's sum tables.

    From the block's pooled hidden state h̄_b (mean over positions), for every sum table t
    [K, C]: U_b = A_t h̄_b / √D ∈ R^{K×r}, V_b = B_t h̄_b / √D ∈ R^{C×r} (A_t, B_t standard normal
    at init) and

        log W'_t[b] = log_softmax(log W_t + gate_t · U_b V_bᵀ)      (per sample: [B, K, C]).

    The gates start at 0, so the adapter starts as the identity. Structural zeros of W stay zero.
    ``tables`` restricts the correction to some table indices (default: every sum table).
    """

    def __init__(self, model, hidden_size, rank: int = 4, tables: list[int] | None = None):
        super().__init__(model, hidden_size)
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"LowRankAdapter: rank must be a positive int, got {rank!r}")
        shapes = [tuple(t.shape) for t in model.log_params().sums]
        self.tables = list(range(len(shapes))) if tables is None else list(tables)
        if any(not 0 <= t < len(shapes) for t in self.tables):
            raise ValueError(f"LowRankAdapter: tables must index the circuit's {len(shapes)} sum tables, got {tables}")
        self.rank = rank
        self.left = nn.ParameterList(nn.Parameter(torch.randn(hidden_size, shapes[t][0] * rank)) for t in self.tables)
        self.right = nn.ParameterList(nn.Parameter(torch.randn(hidden_size, shapes[t][1] * rank)) for t in self.tables)
        self.gate = nn.Parameter(torch.zeros(len(self.tables)))

    def forward(self, model, hidden) -> AdapterOutput:
        hidden = self.check_hidden(hidden)
        # unit-scale weights over √D: U and V entries start at the scale of h̄'s entries for any D
        pooled = hidden.mean(dim=1).to(self.gate.dtype) / self.hidden_size ** 0.5    # [B, D]
        base = model.log_params()
        sums = list(base.sums)
        for j, t in enumerate(self.tables):
            k, c = sums[t].shape[-2:]
            u = (pooled @ self.left[j]).reshape(-1, k, self.rank)                 # [B, K, r]
            v = (pooled @ self.right[j]).reshape(-1, c, self.rank)                # [B, C, r]
            delta = torch.einsum("bkr,bcr->bkc", u, v) * self.gate[j]            # [B, K, C]
            sums[t] = torch.log_softmax(sums[t] + delta.to(sums[t].dtype), dim=-1)
        return AdapterOutput(log_params=structures.LogParams(sums, base.inputs))


class CouplingStrengthAdapter(Adapter):
    """Per-sample strength of the circuit's coupling: every sum table tempered by a factor read off the
    block's pooled hidden state h̄_b (mean over positions),

        α_{b,t} = exp(clamp(w_t · h̄_b / D + c_t, ±MAX_LOG_STRENGTH)),
        log W'_t[b] = log_softmax(α_{b,t} · log W_t).

    α → 0 makes every row uniform over its nonzero entries (for an HMM: independent positions, each a
    mixture of the emissions), α = 1 is the circuit, α > 1 sharpens it. Why: one static circuit learns
    the coupling a blank block needs, and counts it a second time where the backbone's logits already
    carry most of the block (docs/results.md, known truth); the pooled hidden state tells how much of
    the block is masked. Emission tables are left alone. w, c start at 0: the identity. Structural
    zeros stay zero (α > 0).
    """

    MAX_LOG_STRENGTH = 8.0

    def __init__(self, model, hidden_size):
        super().__init__(model, hidden_size)
        tables = len(model.log_params().sums)
        self.weight = nn.Parameter(torch.zeros(hidden_size, tables))
        self.bias = nn.Parameter(torch.zeros(tables))

    def forward(self, model, hidden) -> AdapterOutput:
        hidden = self.check_hidden(hidden)
        pooled = hidden.mean(dim=1).to(self.weight.dtype)                              # [B, D]
        log_strength = (pooled @ self.weight / self.hidden_size + self.bias).clamp(
            -self.MAX_LOG_STRENGTH, self.MAX_LOG_STRENGTH)                             # [B, T]
        base = model.log_params()
        sums = []
        for t, table in enumerate(base.sums):
            strength = log_strength[:, t].exp().to(table.dtype)[:, None, None]        # [B, 1, 1]
            # -inf entries stay -inf (strength > 0), so the product needs no guard
            sums.append(torch.log_softmax(strength * table, dim=-1))                  # [B, K, C]
        return AdapterOutput(log_params=structures.LogParams(sums, base.inputs))


class BackboneWeightAdapter(Adapter):
    """A learned trust in the backbone: the exponent β on its per-token distributions,

        p̂ ∝ C · Π_i q_i^β,   log β_b = clamp(w · h̄_b / D + c, ±MAX_LOG_WEIGHT)

    from the block's pooled hidden state h̄_b (mean over positions); with ``per_sample=False`` one β
    for every block (c alone; no hidden states read). Why: the product counts a dependency twice
    when both experts carry it. Where the circuit already holds the joint (known truth: the data's
    own HMM family) β → 0 leaves the circuit alone; where the backbone's conditionals are the better
    expert β stays near 1 or sharpens them (β > 1, the paper's τ < 1, learned instead of tuned).
    The circuit is not changed. w, c start at 0: the identity.
    """

    MAX_LOG_WEIGHT = 8.0

    def __init__(self, model, hidden_size=None, per_sample: bool = True):
        self.needs_hidden = bool(per_sample)             # before the base class checks hidden_size
        super().__init__(model, hidden_size)
        self.per_sample = self.needs_hidden
        self.weight = nn.Parameter(torch.zeros(hidden_size)) if self.per_sample else None
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, model, hidden=None) -> AdapterOutput:
        if self.per_sample:
            hidden = self.check_hidden(hidden)
            pooled = hidden.mean(dim=1).to(self.weight.dtype)                         # [B, D]
            log_weight = pooled @ self.weight / self.hidden_size + self.bias          # [B]
        else:
            log_weight = self.bias                                                     # one β for every block
        log_weight = log_weight.clamp(-self.MAX_LOG_WEIGHT, self.MAX_LOG_WEIGHT)
        return AdapterOutput(backbone_weight=log_weight.exp().to(model.dtype))


ADAPTERS: dict[str, Callable[..., Adapter]] = {
    "static": StaticAdapter,
    "latent_evidence": LatentEvidenceAdapter,
    "low_rank": LowRankAdapter,
    "coupling": CouplingStrengthAdapter,
    "backbone_weight": BackboneWeightAdapter,
}


def register_adapter(name: str, factory: Callable[..., Adapter]) -> None:
    """Make ``factory(model, hidden_size, **kw)`` available to :func:`make_adapter` as ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"adapter name must be a non-empty string, got {name!r}")
    ADAPTERS[name] = factory


def make_adapter(name: str, circuit_model: structures.CompiledCircuit, hidden_size: int | None = None,
                 **kw) -> Adapter:
    """Build the adapter registered as ``name`` for ``circuit_model`` and a backbone of width ``hidden_size``."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown adapter {name!r}; registered: {sorted(ADAPTERS)}")
    adapter = ADAPTERS[name](circuit_model, hidden_size, **kw)
    return adapter.to(device=circuit_model.device, dtype=circuit_model.dtype)
