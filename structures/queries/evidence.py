"""Checking and normalizing query arguments into an :class:`~structures.Evidence`.

Every query takes the same three arguments:
  x              [B, n] integer token ids (entries at unobserved positions are ignored),
  observed       [B, n] bool, True = the position's token is known; omitted = every position of
                 ``x`` observed,
  soft_evidence  [B, n, V] log-potentials multiplied into the leaves (V = the circuit's vocab), or a
                 :class:`CandidateEvidence` (k candidate tokens per position, -inf elsewhere);
or, in place of all three, an :class:`Evidence` already checked by :func:`make_evidence` (a hot loop
checks its inputs once, then queries many times). Errors name the argument and what is wrong with it.
"""
from __future__ import annotations

import math

import torch

from ..compile.engine import CircuitEngine
from ..types import CandidateEvidence, Evidence, LogParams

__all__ = ["make_evidence", "prepare", "check_log_params"]


def _batch_size(*tensors) -> int | None:
    for t in tensors:
        if t is not None:
            return t.shape[0]
    return None


def _check_below_inf(values: torch.Tensor, name: str) -> None:
    """No NaN and no +inf, in one pass: the max of a tensor is NaN or +inf iff it holds one."""
    if values.numel() == 0:
        return
    top = values.detach().amax()
    if bool(torch.isnan(top)):
        raise ValueError(f"{name} contains NaN")
    if bool(top == float("inf")):
        raise ValueError(f"{name} contains +inf (log-potentials must be < +inf; use -inf to forbid tokens)")


def _potentials_in(values: torch.Tensor, name: str, dtype: torch.dtype) -> torch.Tensor:
    """``values`` cast to the circuit's dtype, then checked: a float64 1e39 is finite, but +inf in
    float32, so a check before the cast would let it through. (-inf stays legal: a forbidden token.)"""
    cast = values.to(dtype)
    if cast.numel() and not float(cast.detach().amax()) < math.inf:   # one reduction on the happy path
        _check_below_inf(values, name)                                # NaN or +inf before the cast
        raise ValueError(f"{name} holds values too large for the circuit's dtype ({dtype}): they overflow "
                         f"to +inf (largest finite: {torch.finfo(dtype).max:.3g}); pass smaller log-potentials "
                         "or compile the circuit with dtype=torch.float64")
    return cast


def prepare(model: CircuitEngine, x=None, observed=None, soft_evidence=None, node_potentials=None) -> Evidence:
    """A query's :class:`Evidence`: ``x`` itself when it is one (checked when it was made), else
    :func:`make_evidence` of the raw arguments."""
    if isinstance(x, Evidence):
        extra = [name for name, v in (("observed", observed), ("soft_evidence", soft_evidence),
                                      ("node_potentials", node_potentials)) if v is not None]
        if extra:
            raise ValueError(f"an Evidence carries everything a query needs; {', '.join(extra)} must be None")
        return x
    return make_evidence(model, x, observed, soft_evidence, node_potentials)


def make_evidence(model: CircuitEngine, x=None, observed=None, soft_evidence=None, node_potentials=None,
                  default_batch: int | None = None) -> Evidence:
    """Check the raw query arguments (see the module docstring) and return them as an :class:`Evidence`."""
    n, device, dtype = model.num_vars, model.device, model.dtype
    if x is not None:
        x = torch.as_tensor(x, device=device)
        if x.dtype in (torch.bool,) or x.is_floating_point() or x.is_complex():
            raise TypeError(f"x must be an integer tensor of token ids, got dtype {x.dtype}")
        if x.dim() != 2 or x.shape[1] != n:
            raise ValueError(f"x must have shape [batch, {n}] (one column per circuit variable), got {tuple(x.shape)}")
        x = x.long()
    if observed is not None:
        observed = torch.as_tensor(observed, device=device)
        if observed.dtype != torch.bool:
            raise TypeError(f"observed must be a bool tensor (True = observed), got dtype {observed.dtype}")
        if observed.dim() != 2 or observed.shape[1] != n:
            raise ValueError(f"observed must have shape [batch, {n}], got {tuple(observed.shape)}")
    candidates = None
    if isinstance(soft_evidence, CandidateEvidence):
        candidates, soft_evidence = _check_candidates(model, soft_evidence), None
    if soft_evidence is not None:
        soft_evidence = torch.as_tensor(soft_evidence, device=device)
        if not soft_evidence.is_floating_point():
            raise TypeError(f"soft_evidence must be a float tensor of log-potentials, got dtype {soft_evidence.dtype}")
        if soft_evidence.dim() != 3 or soft_evidence.shape[1] != n:
            raise ValueError(f"soft_evidence must have shape [batch, {n}, vocab], got {tuple(soft_evidence.shape)}")
        if soft_evidence.shape[2] != model.vocab_size:
            raise ValueError(f"soft_evidence has vocabulary size {soft_evidence.shape[2]} but the circuit's is "
                             f"{model.vocab_size}")
        soft_evidence = _potentials_in(soft_evidence, "soft_evidence", dtype)
    if node_potentials is not None:
        node_potentials = torch.as_tensor(node_potentials, device=device)
        expected = model.layout.num_input_nodes
        if node_potentials.dim() != 2 or node_potentials.shape[1] != expected:
            raise ValueError(f"node_potentials must have shape [batch, {expected}], got {tuple(node_potentials.shape)}")
        node_potentials = _potentials_in(node_potentials, "node_potentials", dtype)

    if candidates is not None:
        soft_evidence = candidates.ids                                       # for the batch-size checks only
    batch = _batch_size(x, observed, soft_evidence, node_potentials) or default_batch or 1
    for name, t in (("x", x), ("observed", observed), ("soft_evidence", soft_evidence),
                    ("node_potentials", node_potentials)):
        if t is not None and t.shape[0] != batch:
            raise ValueError(f"{name} has batch size {t.shape[0]}, other arguments have {batch}")
    all_observed = observed is None and x is not None
    if observed is None:
        observed = torch.full((batch, n), x is not None, dtype=torch.bool, device=device)
    if x is None:
        if bool(observed.any()):
            raise ValueError("observed marks known positions but no x was given")
        x = torch.zeros((batch, n), dtype=torch.long, device=device)
    tokens = x if all_observed else torch.where(observed, x, torch.zeros_like(x))   # 0: in every vocabulary
    _check_token_range(model, tokens, x)
    return Evidence(tokens=tokens, observed=observed, soft=None if candidates is not None else soft_evidence,
                    node_potentials=node_potentials, candidates=candidates)


def _check_token_range(model: CircuitEngine, tokens: torch.Tensor, x: torch.Tensor) -> None:
    """Every token id within its variable's vocabulary; one min/max reduction when all variables
    share one vocabulary (a per-call cost on the hot path of every query)."""
    if tokens.numel() == 0:
        return
    sizes = model.vocab_sizes
    if min(sizes) == max(sizes):
        low, high = torch.aminmax(tokens)
        if int(low) >= 0 and int(high) < sizes[0]:
            return
    bad = (tokens < 0) | (tokens >= torch.tensor(sizes, device=tokens.device))
    if bool(bad.any()):
        b, i = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"x[{b}, {i}] = {int(x[b, i])} is out of range for variable {i} (vocab {sizes[i]})")


def _check_candidates(model: CircuitEngine, cand: CandidateEvidence) -> CandidateEvidence:
    n, vocab = model.num_vars, model.vocab_size
    ids, pot = cand.ids, cand.log_potentials
    if not torch.is_tensor(ids) or ids.is_floating_point() or ids.dtype == torch.bool or ids.is_complex():
        raise TypeError(f"soft_evidence.ids must be an integer tensor of token ids, got {_kind(ids)}")
    if not torch.is_tensor(pot) or not pot.is_floating_point():
        raise TypeError(f"soft_evidence.log_potentials must be a float tensor, got {_kind(pot)}")
    if ids.dim() != 3 or ids.shape[1] != n or ids.shape[2] < 1:
        raise ValueError(f"soft_evidence.ids must have shape [batch, {n}, k] with k >= 1, got {tuple(ids.shape)}")
    if pot.shape != ids.shape:
        raise ValueError(f"soft_evidence.log_potentials must have the shape of ids {tuple(ids.shape)}, "
                         f"got {tuple(pot.shape)}")
    ids = ids.to(device=model.device, dtype=torch.long)
    if ids.numel() and bool(((ids < 0) | (ids >= vocab)).any()):
        raise ValueError(f"soft_evidence.ids holds token ids outside [0, {vocab}) (the circuit's vocabulary)")
    pot = _potentials_in(pot.to(device=model.device), "soft_evidence.log_potentials", model.dtype)
    return CandidateEvidence(ids, pot)


def _kind(value) -> str:
    """A tensor's dtype, else the type's name (never the value: it may be anything)."""
    return str(value.dtype) if torch.is_tensor(value) else type(value).__name__


def check_log_params(model: CircuitEngine, log_params, batch: int):
    """``log_params`` must be a :class:`LogParams` with one table per model table, each of the
    model's shape; sum tables may be per sample ([batch, K, C]), input tables may not."""
    if log_params is None:
        return None
    if not isinstance(log_params, LogParams):
        raise TypeError(f"log_params must be a LogParams (see model.log_params()), got {type(log_params).__name__}")
    for name, tables, own in (("sums", log_params.sums, model.sums), ("inputs", log_params.inputs, model.inputs)):
        if len(tables) != len(own):
            raise ValueError(f"log_params.{name} has {len(tables)} tables, the circuit has {len(own)}")
        for t, (table, reference) in enumerate(zip(tables, own)):
            shape = tuple(reference.logits.shape)
            if not torch.is_tensor(table) or not table.is_floating_point():
                raise TypeError(f"log_params.{name}[{t}] must be a float tensor")
            if name == "inputs" and table.dim() != 2:
                raise ValueError("input tables cannot be per-sample; use node_potentials for per-sample leaf terms")
            if tuple(table.shape[-2:]) != shape or table.dim() not in (2, 3):
                raise ValueError(f"log_params.{name}[{t}] must have shape {shape} or [batch, *{shape}], "
                                 f"got {tuple(table.shape)}")
            if table.dim() == 3 and table.shape[0] != batch:
                raise ValueError(f"per-sample sum parameters have batch {table.shape[0]}, the query has {batch}")
    return log_params
