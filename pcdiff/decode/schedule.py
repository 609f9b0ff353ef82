"""How many positions a decoding step commits, and which: LLaDA's even schedule, Fast-dLLM's
confidence threshold, and the top-scoring selection."""
from __future__ import annotations

import math

import torch

__all__ = ["split_evenly", "per_row_counts", "commit_count", "select_top"]


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


def commit_count(count: int | torch.Tensor, scores: torch.Tensor, masked: torch.Tensor,
                 threshold: float | None) -> torch.Tensor:
    """Positions to commit per row this step [B]: the schedule's ``count`` (an int, or one per row),
    raised to every masked position whose score exceeds ``threshold`` (Fast-dLLM), capped by what is
    still masked."""
    n = torch.as_tensor(count, dtype=torch.long, device=masked.device).expand(masked.shape[:1])
    if threshold is not None:
        n = torch.maximum(n, ((scores > threshold) & masked).sum(-1))
    return torch.minimum(n, masked.sum(-1))


def select_top(scores: torch.Tensor, candidates: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """The ``count[b]`` highest-scoring candidates of each row: scores [B, L], candidates [B, L]
    bool, count [B] long (at most the row's candidates) -> [B, L] bool. Ties go to the left."""
    scores = scores.masked_fill(~candidates, -math.inf)
    order = scores.argsort(dim=-1, descending=True, stable=True)                # [B, L] positions by rank
    ranks = torch.arange(scores.shape[-1], device=scores.device)
    keep_rank = ranks.unsqueeze(0) < count.unsqueeze(-1)                        # [B, L] by rank
    return torch.zeros_like(candidates).scatter(-1, order, keep_rank) & candidates
