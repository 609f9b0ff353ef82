"""Any-order sampling from a CoDD block distribution: one position at a time, each drawn from its exact
conditional given everything drawn before it (the paper's CoDD+AO, and the decoder's ``any_order``).

By the chain rule any order gives a draw from p̂; the order only decides which choices are made
first. The next position is chosen from the current conditionals alone, before its token is
drawn, so the committed tokens are an exact draw for every rule. Each step conditions the same
circuit evidence on one more decided position (:meth:`CoDDBlockDistribution.with_decided`): the
adapter and the backbone's evidence are computed once per block, not once per position.
"""
from __future__ import annotations

import torch

from .rules import check_rule, confidence, draw

__all__ = ["sample_any_order"]


def sample_any_order(dist, order: str | torch.Tensor = "low_confidence", generator: torch.Generator | None = None,
                     *, budget: int | torch.Tensor | None = None, threshold: float | None = None,
                     greedy: bool = False, return_order: bool = False):
    """Draw the masked positions of ``dist`` (a :class:`~pcdiff.codd.CoDDBlockDistribution`) one at a time.

    order      a rule of :data:`~pcdiff.codd.rules.REMASKING` ranking the positions by their current
               conditionals, or a [B, L] tensor whose row b is a permutation of 0..L-1 (decided
               positions in it are skipped)
    budget     positions to draw per row: an int or a [B] tensor (default: every masked position);
               the others keep their input tokens (a partial decode)
    threshold  with a rule: a row also goes on while one of its masked positions scores above it
               (Fast-dLLM's confidence threshold, so a budget is a minimum)
    greedy     take each conditional's most likely token instead of drawing it
    Returns [B, L] (input tokens where nothing was drawn), and with ``return_order`` the step at which
    each position was drawn [B, L] (-1 where not drawn). Costs one marginals query per step, over
    the candidates with top-k (no [B, L, V] tensor).
    """
    dist.require_possible()
    rank = _ranks(order, dist.tokens)
    if threshold is not None and (rank is not None or order == "random"):
        raise ValueError("threshold needs a confidence-based rule, not 'random' or an explicit order")
    masked = dist.masked.clone()
    budget = _budget(budget, masked)
    evidence, log_params = dist.inference_args()
    tokens, out = evidence.tokens.clone(), dist.given_tokens.clone()
    step_of = torch.full_like(out, -1)
    rows = torch.arange(out.shape[0], device=out.device)
    done = torch.zeros_like(budget)
    for step in range(masked.shape[1]):
        owed = (done < budget) & masked.any(-1)                               # [B] rows with work left
        if not masked.any() or (threshold is None and not owed.any()):
            break
        with torch.no_grad():
            probs = dist.model.marginals(dist.with_decided(tokens, ~masked), log_params=log_params)   # [B, L, k]
        if rank is None:
            scores = confidence(order, probs, None, generator).masked_fill(~masked, float("-inf"))
        else:
            scores = (-rank).masked_fill(~masked, float("-inf"))
        if threshold is not None:
            owed |= (scores > threshold).any(-1) & masked.any(-1)
            if not owed.any():
                break
        pos = scores.argmax(-1)                                               # [B]
        token = _draw_token(dist, probs[rows, pos], rows, pos, greedy, generator)
        chosen, at = rows[owed], pos[owed]
        tokens[chosen, at] = out[chosen, at] = token[owed]
        step_of[chosen, at] = step
        masked[chosen, at] = False
        done += owed.long()
    return (out, step_of) if return_order else out


def _draw_token(dist, probs: torch.Tensor, rows, pos, greedy: bool, generator) -> torch.Tensor:
    """A token for position ``pos`` [B] of each row from its conditional ``probs`` [B, k] over
    ``dist.candidate_ids`` (in token order, so that with k = V the same noise draws the same token as
    the dense distribution)."""
    slot = draw(probs, greedy, generator)                                     # = the token id without top-k
    return dist.candidate_ids[rows, pos].gather(-1, slot.unsqueeze(-1)).squeeze(-1)


def _ranks(order, tokens: torch.Tensor) -> torch.Tensor | None:
    """None for a rule; for an explicit order, rank[b, i] = when position i comes."""
    if isinstance(order, str):
        check_rule(order, "order")
        return None
    order = torch.as_tensor(order, device=tokens.device)
    if order.shape != tokens.shape or order.is_floating_point() or order.dtype == torch.bool:
        raise ValueError(f"order must be a rule name or an integer tensor of shape {tuple(tokens.shape)}, "
                         f"got {order.dtype} {tuple(order.shape)}")
    length = tokens.shape[1]
    if not torch.equal(order.sort(-1).values, torch.arange(length, device=order.device).expand_as(order)):
        raise ValueError(f"order: every row must be a permutation of 0..{length - 1}")
    rank = torch.empty_like(order, dtype=torch.long)
    rank.scatter_(1, order.long(), torch.arange(length, device=order.device).expand_as(order))
    return rank.double()


def _budget(budget, masked: torch.Tensor) -> torch.Tensor:
    """[B] how many positions each row draws at most: ``budget``, capped by what is masked."""
    count = masked.sum(-1)
    if budget is None:
        return count
    budget = torch.as_tensor(budget, device=masked.device)
    if budget.is_floating_point() or budget.dtype == torch.bool or budget.dim() > 1 \
            or (budget.dim() == 1 and budget.shape[0] != masked.shape[0]) or bool((budget < 0).any()):
        raise ValueError(f"budget must be a non-negative int or a [{masked.shape[0]}] integer tensor, got {budget!r}")
    return torch.minimum(budget.long().expand_as(count), count)
