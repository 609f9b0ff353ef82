"""How many positions a decoding step commits, and which: LLaDA's even schedule, Fast-dLLM's
confidence threshold, the EB-sampler's entropy bound, and the top-scoring selection; DiffusionGemma's linear
temperature schedule.

The schedule's count is a floor: the threshold and the entropy bound raise a step's count, never
lower it, so every block still ends decoded within its steps (which become an upper bound). With as
many steps as positions the floor is one position a step, the least either rule commits itself.
"""
from __future__ import annotations

import math

import torch

__all__ = ["split_evenly", "per_row_counts", "commit_count", "entropy_bound_count", "select_top", "leftmost",
           "linear_temperature"]


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` integers as evenly as possible, earlier parts taking the
    remainder: LLaDA's number of tokens committed per step (and our steps per block)."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def per_row_counts(masked: torch.Tensor, steps: int) -> torch.Tensor:
    """[steps, B]: each row's masked positions (``masked`` [B, L]) split evenly over ``steps``, earlier
    steps taking the remainder: :func:`split_evenly` row by row (rows may hold different numbers)."""
    total = masked.sum(-1)                                                      # [B]
    step = torch.arange(steps, device=masked.device).unsqueeze(-1)              # [S, 1]
    return total // steps + (step < total % steps).long()


def commit_count(count: int | torch.Tensor, scores: torch.Tensor | None, masked: torch.Tensor,
                 threshold: float | None, entropies: torch.Tensor | None = None,
                 entropy_bound: float | None = None) -> torch.Tensor:
    """Positions to commit per row this step [B]: the schedule's ``count`` (an int, or one per row),
    raised to every masked position whose score (``scores`` [B, L]) exceeds ``threshold`` (Fast-dLLM),
    or to the :func:`entropy_bound_count` of ``entropies`` [B, L] under ``entropy_bound`` (EB-sampler);
    capped by what is still masked. Without either rule the scores are not read."""
    n = torch.as_tensor(count, dtype=torch.long, device=masked.device).expand(masked.shape[:1])
    if threshold is not None:
        n = torch.maximum(n, ((scores > threshold) & masked).sum(-1))
    if entropy_bound is not None:
        n = torch.maximum(n, entropy_bound_count(scores, entropies, masked, entropy_bound))
    return torch.minimum(n, masked.sum(-1))


def entropy_bound_count(scores: torch.Tensor, entropies: torch.Tensor, masked: torch.Tensor,
                        bound: float) -> torch.Tensor:
    """The EB-sampler's step size (Ben-Hamu et al., arXiv 2505.24857) [B]: the masked positions taken
    in :func:`select_top`'s order (scores [B, L], highest first), the longest prefix whose summed
    entropy minus its largest entropy (``entropies`` [B, L], nats) is at most ``bound``. The first
    position alone spends nothing, so a row with a masked position commits at least one.

    With the "entropy" rule's scores the order is entropy ascending and the spent amount is the sum of
    all but the last (largest) entropy, the rule as DiffusionGemma states it; the other rules are the
    paper's other error proxies (confidence, margin)."""
    order = scores.masked_fill(~masked, -math.inf).argsort(dim=-1, descending=True, stable=True)  # [B, L] by rank
    ranked = entropies.gather(-1, order).clamp_min(0)                           # [B, L] by rank
    # Σ h − max h over each prefix never decreases (entropies are >= 0), so the ranks within the bound
    # are a prefix; masked positions rank first, so counting masked ranks within it gives its length
    spent = ranked.cumsum(-1) - ranked.cummax(-1).values                       # [B, L] by rank
    return ((spent <= bound) & masked.gather(-1, order)).sum(-1)


def select_top(scores: torch.Tensor, candidates: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """The ``count[b]`` highest-scoring candidates of each row: scores [B, L], candidates [B, L]
    bool, count [B] long (at most the row's candidates) -> [B, L] bool. Ties go to the left."""
    scores = scores.masked_fill(~candidates, -math.inf)
    order = scores.argsort(dim=-1, descending=True, stable=True)                # [B, L] positions by rank
    ranks = torch.arange(scores.shape[-1], device=scores.device)
    keep_rank = ranks.unsqueeze(0) < count.unsqueeze(-1)                        # [B, L] by rank
    return torch.zeros_like(candidates).scatter(-1, order, keep_rank) & candidates


def leftmost(candidates: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """The ``count[b]`` leftmost candidates of each row: [B, L] bool (the AR product's commit order)."""
    return select_top(torch.zeros(candidates.shape, device=candidates.device), candidates, count)   # ties go left


def linear_temperature(remaining: int, steps: int, t_min: float, t_max: float) -> torch.Tensor:
    """DiffusionGemma's temperature schedule: t_max at the first step (``remaining`` = ``steps``), falling
    linearly to t_min + (t_max − t_min)/steps at the last (``remaining`` = 1). A float32 0-d tensor computed
    in the model's own order (an int32 step over the step count, then the affine map), so the logits divided
    by it match the model's ``generate`` bit for bit."""
    fraction = torch.tensor(remaining, dtype=torch.int32) / steps                 # float32, as the model's
    return t_min + (t_max - t_min) * fraction
