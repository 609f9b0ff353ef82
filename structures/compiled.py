"""The compiled circuit as users hold it: the engine (:mod:`structures.compile`) with the exact
queries (:mod:`structures.queries`) as methods, and :func:`compile`, which builds it."""
from __future__ import annotations

import torch

from . import queries
from .circuit import Circuit
from .compile.engine import CircuitEngine
from .limits import MAX_TOTAL_ENTRIES, brief, check_entries
from .nodes import Categorical, Sum
from .types import Evidence

__all__ = ["CompiledCircuit", "compile"]


class CompiledCircuit(CircuitEngine):
    """A circuit laid out as tensors, with its queries. Build it with :func:`structures.compile`.

    Every query takes ``x`` [B, n] token ids, ``observed`` [B, n] bool (True = known; omitted:
    every position of ``x``) and ``soft_evidence`` [B, n, V] log-potentials (or a
    :class:`~structures.CandidateEvidence`), or an :class:`~structures.Evidence` from
    :meth:`evidence` in place of the three; plus optional ``node_potentials`` and ``log_params``.
    """

    def evidence(self, x=None, observed=None, soft_evidence=None, *, node_potentials=None) -> Evidence:
        """The query arguments checked once, to pass to many queries (see :mod:`structures.queries.evidence`)."""
        return queries.make_evidence(self, x, observed, soft_evidence, node_potentials)

    def log_prob(self, x=None, observed=None, soft_evidence=None, *, node_potentials=None, log_params=None):
        """[B] log-probability of the observed positions under the evidence (see :func:`queries.log_prob`)."""
        return queries.log_prob(self, x, observed, soft_evidence, node_potentials=node_potentials,
                                log_params=log_params)

    def marginals(self, x=None, observed=None, soft_evidence=None, *, node_potentials=None, log_params=None,
                  differentiable=False):
        """[B, n, V] posterior marginals (see :func:`queries.marginals`)."""
        return queries.marginals(self, x, observed, soft_evidence, node_potentials=node_potentials,
                                 log_params=log_params, differentiable=differentiable)

    def sample(self, x=None, observed=None, soft_evidence=None, num_samples=None, generator=None, *,
               node_potentials=None, log_params=None):
        """Exact joint samples [B, n] or [num_samples, B, n] (see :func:`queries.sample`)."""
        return queries.sample(self, x, observed, soft_evidence, num_samples, generator,
                              node_potentials=node_potentials, log_params=log_params)

    def sample_and_marginals(self, x=None, observed=None, soft_evidence=None, num_samples=None, generator=None,
                             *, node_potentials=None, log_params=None):
        """Samples, marginals and log Z from one pass (see :func:`queries.sample_and_marginals`)."""
        return queries.sample_and_marginals(self, x, observed, soft_evidence, num_samples, generator,
                                            node_potentials=node_potentials, log_params=log_params)

    def map(self, x=None, observed=None, soft_evidence=None, *, node_potentials=None, log_params=None):
        """The max-product completion and its log-probability (see :func:`queries.map_assignment`)."""
        return queries.map_assignment(self, x, observed, soft_evidence, node_potentials=node_potentials,
                                      log_params=log_params)

    def forward(self, x=None, observed=None, soft_evidence=None, **kwargs):
        """Same as :meth:`log_prob`."""
        return self.log_prob(x, observed, soft_evidence, **kwargs)


def compile(circuit: Circuit, device=None, dtype: torch.dtype = torch.float32) -> CompiledCircuit:  # noqa: A001
    """Lay ``circuit`` out as tensors on ``device`` in ``dtype``; returns a :class:`CompiledCircuit`."""
    if not isinstance(circuit, Circuit):
        raise TypeError(f"compile: circuit must be a structures.Circuit, got {type(circuit).__name__}")
    if not isinstance(dtype, torch.dtype) or dtype not in (torch.float32, torch.float64):
        raise ValueError(f"compile: dtype must be torch.float32 or torch.float64, got {brief(dtype)}")
    _check_table_size(circuit)
    model = CompiledCircuit(circuit, dtype=dtype)
    return model.to(device) if device is not None else model


def _check_table_size(circuit: Circuit) -> None:
    """Refuse, before allocating, a circuit whose compiled tables would be too large: every input
    table is padded to the largest vocabulary, so one variable with a huge vocabulary enlarges them all."""
    total, owners = 0, set()
    for g in circuit.groups:
        owner = getattr(g, "tie_to", None) or g
        if isinstance(g, (Sum, Categorical)) and owner.id not in owners:
            owners.add(owner.id)
            total += g.num_nodes * (circuit.vocab_size if isinstance(g, Categorical) else g.num_child_nodes)
    check_entries(total, f"compile: the circuit's parameter tables (input tables padded to the largest "
                         f"vocabulary, {circuit.vocab_size})", MAX_TOTAL_ENTRIES)
