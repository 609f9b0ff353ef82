"""Per-item scores of the masked tokens of held-out items: the one scoring loop behind the demo's
perplexity table (:mod:`.evaluation`) and its controls (:mod:`.controls`).

For items x0 ``[N, L]`` with ``masked`` ``[N, L]`` (the same number masked in every row), each score
is the item's summed negative log-likelihood (nats) of its masked tokens given the rest:

  one_step      Σ_i −log p_θ(x_i | x_O): the backbone's factorized prediction, one forward pass;
  sequential    the chain rule with the backbone in a given reveal order: one forward pass per
                masked token, each token scored and then revealed (the factorization's floor);
  codd          −log p̂(x_M | x_O): the CoDD layer's exact joint likelihood (arXiv:2510.22510);
  circuit       −log C(x_M | x_O) = log C(x_O) − log C(x) for a circuit used alone (two exact
                marginal queries, no backbone);
  marginal      Σ_i −log p(x_i | x_O) from a distribution's exact marginals: its own one-step score.
"""
from __future__ import annotations

import math

import torch

from ..codd.checks import check_finite
from ..train.noise import corrupt, mask_exactly

__all__ = ["batches", "fixed_masks", "backbone_scores", "circuit_scores", "marginal_scores", "left_to_right",
           "mean_ci"]

#: two-sided 95% normal quantile: the CIs are mean ± Z95 · (per-item standard deviation) / √N
Z95 = 1.959964


def batches(n: int, size: int):
    """Slices of ``range(n)`` of at most ``size`` rows."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def fixed_masks(x0: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``[N, L]`` bool, True at exactly ``count`` (clamped to [1, L]) random positions of every row."""
    return mask_exactly(len(x0), x0.shape[1], count, generator)


def left_to_right(x0: torch.Tensor) -> torch.Tensor:
    """Order keys ``[N, L]`` that reveal the masked positions from the left."""
    return torch.arange(x0.shape[1], dtype=torch.float32).expand(x0.shape).clone()


def _token_logp(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token], with the logits checked: a NaN would otherwise become a score."""
    check_finite(logits, "the backbone's logits", allow_neg_inf=True)
    return torch.log_softmax(logits.float(), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def backbone_scores(backbone, layer, x0: torch.Tensor, masked: torch.Tensor,
                    orders: dict[str, torch.Tensor] | None = None, batch_size: int = 512,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """``{"one_step", "codd" (with a layer), "sequential:<name>" per order}`` → ``[N]`` summed NLL.

    ``orders`` maps a name to order keys ``[N, L]``: the masked positions are revealed by
    increasing key (e.g. :func:`left_to_right`, or ``torch.rand`` for a random order). The masked
    positions hold the backbone's noise (:func:`pcdiff.backbones.noise.corrupt`; a uniform-noise
    model's random tokens come from ``generator``) and keep it until revealed."""
    counts = masked.sum(1)
    if len(x0) and bool((counts != counts[0]).any()):
        raise ValueError("masked must mask the same number of positions in every row")
    orders = orders or {}
    scores: dict[str, list[torch.Tensor]] = {"one_step": [], **({"codd": []} if layer is not None else {}),
                                             **{f"sequential:{name}": [] for name in orders}}
    for rows in batches(len(x0), batch_size):
        x, m = x0[rows], masked[rows]
        noisy = corrupt(x, m, backbone, generator)
        out = backbone(noisy)
        scores["one_step"].append(-torch.where(m, _token_logp(out.logits, x), 0.0).sum(1))
        if layer is not None:
            scores["codd"].append(-layer.distribution(out.logits, out.hidden, x, m).log_prob(x))
        for name, keys in orders.items():
            scores[f"sequential:{name}"].append(_sequential(backbone, x, m, noisy, keys[rows]))
    return {k: torch.cat(v) if v else torch.zeros(0) for k, v in scores.items()}


def _sequential(backbone, x: torch.Tensor, m: torch.Tensor, noisy: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """[n] summed NLL of the chain rule, revealing the masked positions by increasing key."""
    order = torch.where(m, keys, torch.full_like(keys, math.inf)).argsort(dim=1)    # masked positions first
    current, arange = noisy.clone(), torch.arange(len(x))
    total = torch.zeros(len(x), device=x.device)
    for step in range(int(m[0].sum()) if len(x) else 0):
        pos = order[:, step]
        logits = backbone(current).logits[arange, pos]                         # [n, V]
        total -= _token_logp(logits, x[arange, pos])
        current[arange, pos] = x[arange, pos]
    return total


@torch.no_grad()
def circuit_scores(circuit, x0: torch.Tensor, masked: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """``[N]``: −log C(x_M | x_O) = log C(x_O) − log C(x), exact, for a compiled circuit used alone."""
    pieces = []
    for rows in batches(len(x0), batch_size):
        x, m = x0[rows], masked[rows]
        pieces.append(circuit.log_prob(x, observed=~m) - circuit.log_prob(x))
    return torch.cat(pieces) if pieces else torch.zeros(0)


@torch.no_grad()
def marginal_scores(distribution, x0: torch.Tensor, masked: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """``[N]``: Σ_{i∈M} −log p(x_i | x_O), a distribution's own one-step score: each masked token from its
    exact marginal given the observed ones (``distribution.marginals``: a compiled circuit, or
    :class:`pcdiff.data.EmpiricalDistribution`)."""
    pieces = []
    for rows in batches(len(x0), batch_size):
        x, m = x0[rows], masked[rows]
        marginals = distribution.marginals(x, observed=~m)                         # [n, L, V]
        token = marginals.gather(-1, x.to(marginals.device).unsqueeze(-1)).squeeze(-1).double()
        pieces.append(-torch.where(m.to(token.device), token.log(), 0.0).sum(1).cpu())
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.float64)


def mean_ci(values: torch.Tensor) -> dict[str, float]:
    """``{"mean", "ci95"}``: the mean of per-item values and the half-width of its normal 95% interval
    (per-item standard error; nan with fewer than two items)."""
    values = values.double()
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    half = Z95 * float(values.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "ci95": half}
