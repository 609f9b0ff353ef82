"""The compiled circuit: a ``torch.nn.Module`` holding the parameter tables and the layer schedule.

Its one job is the upward pass (:meth:`CompiledCircuit.upward`): given evidence, compute the log
value of every node group, bottom-up, in the sum-product or the max-product semiring. The queries
(:mod:`structures.queries`) are built on it and exposed here as methods.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..circuit import Circuit
from .candidates import CandidateEvidence
from .layout import Layout, build_layout
from .upward import PassTables, upward


@dataclass
class LogParams:
    """Normalized log-parameters: ``sums[t]`` is [K, C] (or per sample [B, K, C]) for sum table t,
    ``inputs[t]`` is [K, V] for input table t. Adapters produce modified copies of these."""
    sums: list[torch.Tensor]
    inputs: list[torch.Tensor]


@dataclass
class Evidence:
    """Validated query input (see :mod:`structures.queries.evidence`).

    tokens [B, n] (0 where unobserved), observed [B, n] bool, soft [B, n, V] log-potentials or None,
    node_potentials [B, num_input_nodes] log-potentials on input nodes or None, candidates: soft
    evidence restricted to k candidate tokens per position (a :class:`CandidateEvidence`, never
    together with ``soft``) or None.
    """
    tokens: torch.Tensor
    observed: torch.Tensor
    soft: torch.Tensor | None = None
    node_potentials: torch.Tensor | None = None
    candidates: CandidateEvidence | None = None

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]


class CompiledCircuit(nn.Module):
    """A circuit laid out as tensors. Build it with :func:`structures.compile`."""

    def __init__(self, circuit: Circuit, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.layout: Layout = build_layout(circuit)
        self._circuit = circuit.copy()
        self.num_vars = circuit.num_vars
        self.vocab_sizes = list(circuit.vocab_sizes)
        self.vocab_size = circuit.vocab_size
        groups = circuit.groups
        self._full_support: dict[str, bool] = {}
        self._table_cache: tuple | None = None
        self.sum_logits = nn.ParameterList()
        self.input_logits = nn.ParameterList()
        for t, i in enumerate(self.layout.sum_sources):
            self._add_table(self.sum_logits, f"sum_support_{t}", groups[i].weights, dtype)
        vmax = self.vocab_size
        for t, i in enumerate(self.layout.input_sources):
            g = groups[i]
            probs = np.zeros((g.num_nodes, vmax))
            probs[:, :g.vocab] = g.probs                       # tokens past a variable's vocab: probability 0
            self._add_table(self.input_logits, f"input_support_{t}", probs, dtype)
        for b, bucket in enumerate(self.layout.input_buckets):
            self.register_buffer(f"bucket_vars_{b}", torch.tensor(bucket.variables), persistent=False)
            self.register_buffer(f"bucket_rows_{b}", torch.arange(len(bucket.groups)), persistent=False)
            setattr(self, f"bucket_in_order_{b}", bucket.variables == list(range(self.num_vars)))
        for layer in self.layout.layers:
            for step in layer.products:
                for j, edges in enumerate(step.edges):
                    if edges is not None:
                        self.register_buffer(f"edges_{step.group}_{j}", torch.from_numpy(edges), persistent=False)
        self.to(dtype)

    def _add_table(self, plist: nn.ParameterList, support_name: str, probs: np.ndarray, dtype) -> None:
        support = torch.from_numpy(np.asarray(probs) > 0)
        with np.errstate(divide="ignore"):
            logits = torch.from_numpy(np.log(probs)).to(dtype)
        # Zero-probability entries are structural: excluded by the support mask, kept at a finite
        # logit so that optimizers never see -inf.
        plist.append(nn.Parameter(torch.where(support, logits, torch.zeros_like(logits))))
        self.register_buffer(support_name, support)
        # Tables without structural zeros skip the masking in every pass.
        self._full_support[support_name] = bool(support.all())

    # ------------------------------------------------------------------ parameters
    @property
    def dtype(self) -> torch.dtype:
        return self.sum_logits[0].dtype if len(self.sum_logits) else self.input_logits[0].dtype

    @property
    def device(self) -> torch.device:
        return self.input_logits[0].device

    def log_params(self) -> LogParams:
        """The current normalized log-parameters (differentiable w.r.t. the logits)."""
        def normalize(logits, support_name):
            if self._full_support[support_name]:
                return torch.log_softmax(logits, dim=-1)
            return torch.log_softmax(logits.masked_fill(~getattr(self, support_name), float("-inf")), dim=-1)
        return LogParams(sums=[normalize(p, f"sum_support_{t}") for t, p in enumerate(self.sum_logits)],
                         inputs=[normalize(p, f"input_support_{t}") for t, p in enumerate(self.input_logits)])

    @torch.no_grad()
    def load_log_params(self, log_params: LogParams) -> None:
        """Set the logits so that :meth:`log_params` returns ``log_params`` (e.g. after an EM step)."""
        for logits, lp in zip(list(self.sum_logits) + list(self.input_logits), log_params.sums + log_params.inputs):
            # A zero inside the support (an EM count of zero) must stay a zero after the softmax:
            # the most negative finite logit, not 0 (which would give it the weight of a likely
            # entry). Entries outside the support are masked anyway.
            logits.copy_(torch.where(torch.isfinite(lp), lp, torch.full_like(lp, torch.finfo(lp.dtype).min)))

    def to_circuit(self) -> Circuit:
        """A symbolic copy of the circuit carrying the current (trained) parameters."""
        circuit = self._circuit.copy()
        lp = self.log_params()
        for t, i in enumerate(self.layout.sum_sources):
            circuit.groups[i].weights = lp.sums[t].detach().double().exp().cpu().numpy()
        for t, i in enumerate(self.layout.input_sources):
            g = circuit.groups[i]
            g.probs = lp.inputs[t].detach().double().exp().cpu().numpy()[:, :g.vocab]
        return Circuit(circuit.root)

    @property
    def input_nodes_by_var(self) -> list[torch.Tensor]:
        """For each variable, the positions of its input nodes on the flat input-node axis
        (the axis of ``Evidence.node_potentials``); adapters use it to address latent states."""
        per_var: list[list[int]] = [[] for _ in range(self.num_vars)]
        groups = self._circuit.groups
        for i, offset in self.layout.input_node_offset.items():
            per_var[groups[i].var].extend(range(offset, offset + groups[i].num_nodes))
        return [torch.tensor(v, device=self.device) for v in per_var]

    # ------------------------------------------------------------------ upward pass
    def upward(self, evidence: Evidence, log_params: LogParams | None = None, semiring: str = "sum",
               tables: PassTables | None = None, keep_all: bool = True) -> list[torch.Tensor | None]:
        """Log value ``[B, K]`` of every node group (indexed like ``circuit.groups``); with
        ``keep_all=False`` only the root's (the others are None)."""
        if semiring not in ("sum", "max"):
            raise ValueError(f"semiring must be 'sum' or 'max', got {semiring!r}")
        tables = tables if tables is not None else self.pass_tables(log_params)
        return upward(self, evidence, tables, semiring, keep_all)

    def pass_tables(self, log_params: LogParams | None) -> PassTables:
        """The parameter tables for one pass. Without gradients and with the module's own parameters
        (inference: sampling, decoding) they are reused across passes until a parameter changes;
        normalizing, exponentiating and transposing [K, V] tables otherwise dominates a decode step."""
        if log_params is not None:
            return PassTables(log_params)
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            return PassTables(self.log_params())
        key = tuple((id(p), p.data_ptr(), p._version) for p in self.parameters())
        if self._table_cache is None or self._table_cache[0] != key:
            self._table_cache = (key, PassTables(self.log_params()))
        return self._table_cache[1]

    def root_value(self, evidence: Evidence, log_params: LogParams | None = None, semiring: str = "sum",
                   tables: PassTables | None = None) -> torch.Tensor:
        """``[B]``: the root's log value (the other groups' values are dropped as the pass goes)."""
        return self.upward(evidence, log_params, semiring, tables, keep_all=False)[self.layout.root][:, 0]

    # ------------------------------------------------------------------ queries
    def log_prob(self, x=None, mask=None, soft_evidence=None, *, node_potentials=None, log_params=None):
        from ..queries import log_prob
        return log_prob(self, x, mask, soft_evidence, node_potentials=node_potentials, log_params=log_params)

    def marginals(self, x=None, mask=None, soft_evidence=None, *, node_potentials=None, log_params=None):
        from ..queries import marginals
        return marginals(self, x, mask, soft_evidence, node_potentials=node_potentials, log_params=log_params)

    def sample(self, x=None, mask=None, soft_evidence=None, num_samples=None, generator=None, *,
               node_potentials=None, log_params=None):
        from ..queries import sample
        return sample(self, x, mask, soft_evidence, num_samples, generator,
                      node_potentials=node_potentials, log_params=log_params)

    def sample_and_marginals(self, x=None, mask=None, soft_evidence=None, num_samples=None, generator=None, *,
                             node_potentials=None, log_params=None):
        from ..queries import sample_and_marginals
        return sample_and_marginals(self, x, mask, soft_evidence, num_samples, generator,
                                    node_potentials=node_potentials, log_params=log_params)

    def map(self, x=None, mask=None, soft_evidence=None, *, node_potentials=None, log_params=None):
        from ..queries import map_assignment
        return map_assignment(self, x, mask, soft_evidence, node_potentials=node_potentials, log_params=log_params)

    def forward(self, x=None, mask=None, soft_evidence=None, **kwargs):
        """Same as :meth:`log_prob`."""
        return self.log_prob(x, mask, soft_evidence, **kwargs)

    def extra_repr(self) -> str:
        return f"{self._circuit.summary()}, {len(self.layout.layers)} layers"


def compile(circuit: Circuit, device=None, dtype: torch.dtype = torch.float32) -> CompiledCircuit:  # noqa: A001
    """Lay ``circuit`` out as tensors on ``device`` in ``dtype``; returns a :class:`CompiledCircuit`."""
    if not isinstance(circuit, Circuit):
        raise TypeError(f"compile: circuit must be a structures.Circuit, got {type(circuit).__name__}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"compile: dtype must be torch.float32 or torch.float64, got {dtype}")
    model = CompiledCircuit(circuit, dtype=dtype)
    return model.to(device) if device is not None else model
