"""Learning circuit parameters: mini-batch EM and gradient descent on the exact log-likelihood.

EM's expected counts come from the same differential trick as marginals: the gradient of the
batch log-likelihood with respect to the *normalized* log-parameters is, entry by entry, the
expected number of times each edge (or token emission) is used.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable

import torch
from tqdm.auto import tqdm

from .compiled import CompiledCircuit
from .limits import brief, check_count
from .queries.evidence import make_evidence
from .queries.finite import check_log_z, check_unread_tables
from .types import LogParams


def expected_counts(model: CompiledCircuit, x, observed=None, soft_evidence=None) -> tuple[LogParams, torch.Tensor]:
    """Expected edge / emission counts over the batch, and the batch log-likelihoods ``[B]``."""
    with torch.enable_grad():
        current = model.log_params()
        leaves = LogParams([t.detach().requires_grad_(True) for t in current.sums],
                           [t.detach().requires_grad_(True) for t in current.inputs])
        evidence = make_evidence(model, x, observed, soft_evidence)
        tables = model.pass_tables(leaves)
        ll = model.root_value(evidence, tables=tables)
        # the leaves are the circuit's own parameters: a NaN in them is named as the circuit's (None)
        check_log_z(model, ll, "expected_counts", evidence, None)
        check_unread_tables(model, tables, "expected_counts", evidence, None)
        grads = torch.autograd.grad(ll.sum(), leaves.sums + leaves.inputs, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves.sums + leaves.inputs)]
    n_sums = len(leaves.sums)
    return LogParams(grads[:n_sums], grads[n_sums:]), ll.detach()


@torch.no_grad()
def em_step(model: CompiledCircuit, x, observed=None, soft_evidence=None, step_size: float = 1.0,
            pseudocount: float = 0.0) -> torch.Tensor:
    """One (mini-batch) EM step; returns the batch's mean log-likelihood before the step.

    New parameters are ``(1 - step_size) · θ + step_size · normalize(counts + pseudocount)``
    (``step_size = 1`` on the full data set is classic EM). Structural zeros stay zero.
    """
    _check_model(model, "em_step")
    _check_em_arguments(step_size, pseudocount)
    counts, ll = expected_counts(model, x, observed, soft_evidence)
    current = model.log_params()
    updated = LogParams([], [])
    for name, own in (("sums", model.sums), ("inputs", model.inputs)):
        for theta, count, table in zip(getattr(current, name), getattr(counts, name), own):
            support = table.support
            target = (count.clamp_min(0) + pseudocount) * support
            total = target.sum(-1, keepdim=True)
            # A row with no counts (a node this batch never reaches) keeps its parameters.
            target = torch.where(total > 0, target / total.clamp_min(torch.finfo(target.dtype).tiny), theta.exp())
            mixed = (1 - step_size) * theta.exp() + step_size * target
            if not float(mixed.sum()) < math.inf:          # NaN or inf: one reduction per table
                _raise_bad_update(model, name, len(getattr(updated, name)), theta)
            getattr(updated, name).append(torch.log(mixed))
    model.load_log_params(updated)
    return ll.mean()


def fit(model: CompiledCircuit, data: torch.Tensor, epochs: int = 10, batch_size: int = 256, method: str = "em",
        lr: float = 0.05, step_size: float = 0.5, pseudocount: float = 0.1, seed: int = 0,
        progress: bool = True) -> list[float]:
    """Fit ``model`` to complete data ``[N, n]`` by mini-batch EM (``method="em"``) or Adam
    (``method="adam"``); returns the mean log-likelihood per token after each epoch."""
    _check_model(model, "fit")
    if not isinstance(method, str) or method not in ("em", "adam"):
        raise ValueError(f"method must be 'em' or 'adam', got {brief(method)}")
    for name, value, least in (("epochs", epochs, 0), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {brief(value)}")
    check_count(seed, "seed", 0, (1 << 64) - 1)                   # what a torch.Generator takes
    if method == "em":
        _check_em_arguments(step_size, pseudocount)
    elif not _real(lr) or not 0 < lr < math.inf:
        raise ValueError(f"lr must be > 0 and finite, got {brief(lr)}")
    data = _check_data(model, data)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr) if method == "adam" else None
    history = []
    batches_per_epoch = math.ceil(data.shape[0] / batch_size)
    bar = tqdm(total=epochs * batches_per_epoch, disable=not progress, desc=f"fit ({method})")
    for _ in range(epochs):
        order = torch.randperm(data.shape[0], generator=generator).to(data.device)
        for batch in _chunks(order, batch_size):
            x = data[batch]
            if optimizer is None:
                ll = em_step(model, x, step_size=step_size, pseudocount=pseudocount)
            else:
                optimizer.zero_grad()
                loss = -model.log_prob(x).mean()
                loss.backward()
                optimizer.step()
                ll = -loss.detach()
            bar.update(1)
            bar.set_postfix(ll_per_token=f"{float(ll) / model.num_vars:.4f}")
        with torch.no_grad():
            history.append(float(torch.cat([model.log_prob(data[b]) for b in _chunks(torch.arange(len(data)), 4096)])
                                 .mean()) / model.num_vars)
    bar.close()
    return history


def _check_model(model, caller: str) -> None:
    if not isinstance(model, CompiledCircuit):
        raise TypeError(f"{caller}: model must be a CompiledCircuit (structures.compile(circuit)), "
                        f"got {type(model).__name__}")


def _raise_bad_update(model: CompiledCircuit, name: str, t: int, theta: torch.Tensor) -> None:
    where = f"{name}[{t}]"
    cause = (f"NaN in the circuit's parameters ({where}.logits)" if bool(torch.isnan(theta).any()) else
             f"the expected counts of {where} overflowed in the circuit's dtype ({model.dtype}); use "
             "dtype=torch.float64 or a smaller batch")
    raise ValueError(f"em_step: the updated {where} would hold NaN or inf ({cause}); the parameters were left "
                     "unchanged")


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_em_arguments(step_size: float, pseudocount: float) -> None:
    if not _real(step_size) or not 0.0 < step_size <= 1.0:
        raise ValueError(f"step_size must be in (0, 1], got {brief(step_size)}")
    if not _real(pseudocount) or not 0 <= pseudocount < math.inf:   # an infinite count would give inf / inf
        raise ValueError(f"pseudocount must be >= 0 and finite, got {brief(pseudocount)}")


def _check_data(model: CompiledCircuit, data) -> torch.Tensor:
    """Complete data: a non-empty [N, n] integer tensor of in-vocabulary token ids."""
    data = torch.as_tensor(data, device=model.device)
    if data.is_floating_point() or data.is_complex() or data.dtype == torch.bool:
        raise TypeError(f"data must be an integer tensor of token ids, got dtype {data.dtype}")
    if data.dim() != 2 or data.shape[0] == 0 or data.shape[1] != model.num_vars:
        raise ValueError(f"data must be a non-empty [N, {model.num_vars}] tensor, got {tuple(data.shape)}")
    limits = torch.tensor(model.vocab_sizes, device=data.device)
    bad = (data < 0) | (data >= limits)
    if bool(bad.any()):
        row, col = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"data[{row}, {col}] = {int(data[row, col])} is out of range for variable {col} "
                         f"(vocab {model.vocab_sizes[col]})")
    return data.long()


def _chunks(index: torch.Tensor, size: int) -> Iterable[torch.Tensor]:
    for start in range(0, len(index), size):
        yield index[start:start + size]
