"""No query returns a number computed from a NaN or an overflow.

Checking every input of every query would cost a reduction over every parameter table per call.
Instead each query checks its outputs, which a NaN or an overflow anywhere upstream reaches (log Z
is [B]; marginals are checked through one sum), and only when they are bad looks for the input that
carried it: the parameters the pass ran with (``log_params``, else the circuit's own), then the
evidence. When no input holds a NaN or +inf the pass itself overflowed in the circuit's dtype.

The one input an output check cannot see is an emission table at a position left unobserved
without evidence: the pass adds log 1 there whatever the table holds (every row is a distribution),
so log Z stays finite, yet it is a score of an invalid model, and the top-down walk draws that
position's token from the table itself. :func:`check_unread_tables` covers it, once per set of pass
tables (the circuit's own are cached across passes).

-inf stays legal everywhere (an impossible event); marginals and samples, which need a possible
event, refuse it with the "probability zero" error.
"""
from __future__ import annotations

import math
import weakref

import torch

from ..compile.engine import CircuitEngine
from ..compile.tables import PassTables
from ..types import Evidence, LogParams

__all__ = ["check_log_z", "check_marginals", "check_unread_tables", "nonfinite_input"]

#: pass tables whose input tables were found free of NaN (the circuit's own are reused across passes)
_CLEAN_TABLES: "weakref.WeakSet[PassTables]" = weakref.WeakSet()


def check_log_z(model: CircuitEngine, log_z: torch.Tensor, query: str, evidence: Evidence,
                log_params: LogParams | None, *, impossible_ok: bool = False) -> None:
    """Raise unless every entry of ``log_z`` [B] is finite (or -inf, where ``impossible_ok``)."""
    if log_z.numel() == 0:
        return
    low, high = torch.stack(torch.aminmax(log_z.detach())).tolist()      # one host sync
    if not high < math.inf:                                                # NaN or +inf somewhere
        raise _bad_result(model, query, "log Z", evidence, log_params)
    if low == -math.inf and not impossible_ok:
        rows = torch.isneginf(log_z).nonzero().flatten().tolist()
        raise ValueError(f"{query}: the evidence has probability zero in batch row(s) {rows[:10]} "
                         "(an impossible event: no completion is possible)")


def check_marginals(model: CircuitEngine, marginals: torch.Tensor, query: str, evidence: Evidence,
                    log_params: LogParams | None) -> None:
    """Raise if ``marginals`` hold a NaN or an infinity: one sum over them (NaN or inf iff one is)."""
    if marginals.numel() and not math.isfinite(float(marginals.detach().sum())):
        raise _bad_result(model, query, "the marginals", evidence, log_params)


def check_unread_tables(model: CircuitEngine, tables: PassTables, query: str, evidence: Evidence,
                        log_params: LogParams | None) -> None:
    """The emission tables hold no NaN where the upward pass does not read them (see the module
    doc): needed only when some position goes unobserved without evidence."""
    if evidence.soft is not None or evidence.candidates is not None or tables in _CLEAN_TABLES:
        return
    if bool(evidence.observed.all()):
        return
    if any(_holds_nan_or_inf(t) for t in tables.log_params.inputs):
        raise _bad_result(model, query, "the result", evidence, log_params)
    _CLEAN_TABLES.add(tables)


def _bad_result(model: CircuitEngine, query: str, what: str, evidence: Evidence,
                log_params: LogParams | None) -> ValueError:
    culprit = nonfinite_input(model, evidence, log_params)
    if culprit is not None:
        name, problem = culprit
        return ValueError(f"{query}: {problem} in {name}; {what} would be computed from it")
    return ValueError(f"{query}: {what} overflowed in the circuit's dtype ({model.dtype}) although no input "
                      "holds NaN or +inf; compile the circuit with dtype=torch.float64, or pass smaller soft "
                      "evidence / potentials")


def nonfinite_input(model: CircuitEngine, evidence: Evidence, log_params: LogParams | None):
    """(name, "NaN" or "+inf") of the first input of a query holding one, or None: the parameters
    it ran with (``log_params``, else the circuit's own), then the evidence."""
    for name, tensor in _inputs(model, evidence, log_params):
        problem = _nan_or_inf(tensor)
        if problem is not None:
            return name, problem
    return None


def _inputs(model: CircuitEngine, evidence: Evidence, log_params: LogParams | None):
    """(name, tensor) of everything a pass reads, in the order a diagnosis reports them."""
    if log_params is not None:
        for kind in ("sums", "inputs"):
            for t, table in enumerate(getattr(log_params, kind)):
                yield f"log_params.{kind}[{t}]", table
    else:
        # the normalized tables: a row of logits that is all -inf is as bad as a NaN logit there
        with torch.no_grad():
            for kind in ("sums", "inputs"):
                for t, table in enumerate(getattr(model, kind)):
                    yield f"the circuit's parameters ({kind}[{t}].logits)", table.normalized()
    yield "soft_evidence", evidence.soft
    if evidence.candidates is not None:
        yield "soft_evidence.log_potentials", evidence.candidates.log_potentials
    yield "node_potentials", evidence.node_potentials


def _nan_or_inf(tensor: torch.Tensor | None) -> str | None:
    if tensor is None or tensor.numel() == 0:
        return None
    tensor = tensor.detach()
    if bool(torch.isnan(tensor).any()):
        return "NaN"
    if bool(torch.isposinf(tensor).any()):
        return "+inf"
    return None


def _holds_nan_or_inf(tensor: torch.Tensor) -> bool:
    """One reduction: the max of a tensor is NaN or +inf iff it holds one."""
    return tensor.numel() > 0 and not float(tensor.detach().amax()) < math.inf
