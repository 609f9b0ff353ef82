"""The engine of a compiled circuit: its parameter tables, its constant index tensors and the
upward pass, as a ``torch.nn.Module``.

Its one computation is :meth:`CircuitEngine.upward`: given evidence, the log value of every node
group, bottom-up, in a semiring. The queries (:mod:`structures.queries`) are built on it, and
:class:`structures.CompiledCircuit` adds them to it as methods.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..circuit import Circuit
from ..types import Evidence, LogParams
from .layout import Layout, build_layout
from .semiring import Semiring, semiring as as_semiring
from .tables import CategoricalTable, PassTables
from .upward import upward

__all__ = ["CircuitEngine", "IndexTensors"]


class IndexTensors(nn.Module):
    """The layout's constant index tensors, moved with the module by ``.to(device)`` and read through
    typed accessors: the node-level edges of product groups, the variables of each input bucket."""

    def __init__(self, layout: Layout):
        super().__init__()
        self._edges: dict[tuple[int, int], str] = {}
        for layer in layout.layers:
            for step in layer.products:
                for j, edges in enumerate(step.edges):
                    if edges is not None:
                        name = f"edges_{step.group}_{j}"
                        self.register_buffer(name, torch.from_numpy(edges), persistent=False)
                        self._edges[(step.group, j)] = name
        self._in_order = []
        for b, bucket in enumerate(layout.input_buckets):
            self.register_buffer(f"bucket_vars_{b}", torch.tensor(bucket.variables), persistent=False)
            self.register_buffer(f"bucket_rows_{b}", torch.arange(len(bucket.groups)), persistent=False)
            self._in_order.append(bucket.variables == list(range(layout.num_vars)))

    def product_edges(self, group: int, child: int) -> torch.Tensor | None:
        """[K] the node of child ``child`` that each node of product ``group`` multiplies; None = identity."""
        name = self._edges.get((group, child))
        return None if name is None else getattr(self, name)

    def bucket_variables(self, bucket: int) -> torch.Tensor | None:
        """[G] the variable of each group of input bucket ``bucket``; None when they are 0..n-1 in order."""
        return None if self._in_order[bucket] else getattr(self, f"bucket_vars_{bucket}")

    def bucket_rows(self, bucket: int) -> torch.Tensor:
        """[G] 0..G-1: indexes one table per group of the bucket."""
        return getattr(self, f"bucket_rows_{bucket}")


class CircuitEngine(nn.Module):
    """Parameter tables (``sums``, ``inputs``: :class:`CategoricalTable` s), index tensors and the
    upward pass of a circuit. Build a :class:`structures.CompiledCircuit` with :func:`structures.compile`."""

    def __init__(self, circuit: Circuit, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.layout: Layout = build_layout(circuit)
        self._circuit = circuit.copy()
        self.num_vars = circuit.num_vars
        self.vocab_sizes = list(circuit.vocab_sizes)
        self.vocab_size = circuit.vocab_size
        groups = circuit.groups
        self.sums = nn.ModuleList(CategoricalTable(groups[i].weights, dtype) for i in self.layout.sum_sources)
        tables = []
        for i in self.layout.input_sources:
            probs = np.zeros((groups[i].num_nodes, self.vocab_size))
            probs[:, :groups[i].vocab] = groups[i].probs               # tokens past a variable's vocab: probability 0
            tables.append(CategoricalTable(probs, dtype))
        self.inputs = nn.ModuleList(tables)
        self.index = IndexTensors(self.layout)
        self._table_cache: tuple | None = None
        self.to(dtype)

    # ------------------------------------------------------------------ parameters
    @property
    def dtype(self) -> torch.dtype:
        return self.inputs[0].logits.dtype

    @property
    def device(self) -> torch.device:
        return self.inputs[0].logits.device

    def log_params(self) -> LogParams:
        """The current normalized log-parameters (differentiable w.r.t. the logits)."""
        return LogParams(sums=[t.normalized() for t in self.sums], inputs=[t.normalized() for t in self.inputs])

    def load_log_params(self, log_params: LogParams) -> None:
        """Set the logits so that :meth:`log_params` returns ``log_params`` (e.g. after an EM step).

        Every table is checked first (count, shape, no NaN or +inf), so a bad one changes nothing:
        ``load`` maps non-finite entries to zero probabilities, which would turn a NaN into a
        plausible-looking table."""
        for kind in ("sums", "inputs"):
            tables, own = getattr(log_params, kind), getattr(self, kind)
            if len(tables) != len(own):
                raise ValueError(f"load_log_params: log_params.{kind} has {len(tables)} tables, the circuit {len(own)}")
            for t, (table, reference) in enumerate(zip(tables, own)):
                if not torch.is_tensor(table) or table.shape != reference.logits.shape:
                    raise ValueError(f"load_log_params: log_params.{kind}[{t}] must be a tensor of shape "
                                     f"{tuple(reference.logits.shape)}")
                if table.numel() and not float(table.detach().amax()) < float("inf"):   # NaN or +inf
                    raise ValueError(f"load_log_params: log_params.{kind}[{t}] holds NaN or +inf")
        for table, lp in zip(list(self.sums) + list(self.inputs), log_params.sums + log_params.inputs):
            table.load(lp)

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
        return [torch.tensor(v, device=self.device) for v in self.layout.input_nodes_by_var()]

    # ------------------------------------------------------------------ upward pass
    def upward(self, evidence: Evidence, log_params: LogParams | None = None, semiring: str | Semiring = "sum",
               tables: PassTables | None = None, keep_all: bool = True) -> list[torch.Tensor | None]:
        """Log value ``[B, K]`` of every node group (indexed like ``circuit.groups``); with
        ``keep_all=False`` only the root's (the others are None)."""
        tables = tables if tables is not None else self.pass_tables(log_params)
        return upward(self, evidence, tables, as_semiring(semiring), keep_all)

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

    def root_value(self, evidence: Evidence, log_params: LogParams | None = None, semiring: str | Semiring = "sum",
                   tables: PassTables | None = None) -> torch.Tensor:
        """``[B]``: the root's log value (the other groups' values are dropped as the pass goes)."""
        return self.upward(evidence, log_params, semiring, tables, keep_all=False)[self.layout.root][:, 0]

    def extra_repr(self) -> str:
        return f"{self._circuit.summary()}, {len(self.layout.layers)} layers"

