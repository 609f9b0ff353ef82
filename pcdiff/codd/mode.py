"""The most probable completion of a CoDD block: exact by enumeration where the block is small, the
circuit's max-product pass elsewhere (flagged)."""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["MapResult", "map_completion"]


class MapResult(NamedTuple):
    """``assignment`` [B, L]; ``log_prob`` [B] its exact normalized log p̂; ``exact`` [B] bool,
    True where the assignment is the proven maximizer (found by enumeration)."""
    assignment: torch.Tensor
    log_prob: torch.Tensor
    exact: torch.Tensor


def map_completion(dist, exact_limit: int = 4096) -> MapResult:
    """The most probable completion of the masked positions of ``dist`` (a ``CoDDBlockDistribution``).

    Rows with at most ``exact_limit`` completions (V ** num_masked) are enumerated: exact. The
    others use the core's max-product pass, which is exact for circuits without latent sums
    (or deterministic ones) and otherwise maximizes over tokens *and* latent states jointly
    (Viterbi for an HMM): an approximation of the token MAP, flagged by ``exact`` False. With
    ``top_k`` only the candidates count (k ** num_masked completions).
    """
    dist.require_possible()
    choices = float(dist.top_k or dist.model.vocab_size)
    small = choices ** dist.num_masked.double() <= exact_limit                          # [B]
    with torch.no_grad():
        x = dist.tokens.clone()
        if not bool(small.all()):
            evidence, log_params = dist.inference_args()
            x, _ = dist.model.map(evidence, log_params=log_params)
        if bool(small.any()):
            rows = small.nonzero().flatten()
            x[rows] = _enumerate_best(dist, rows)
        log_prob = dist.score(x, torch.arange(x.shape[0], device=x.device)) - dist.log_normalizer
    return MapResult(x, log_prob, small)


def _enumerate_best(dist, rows: torch.Tensor) -> torch.Tensor:
    """[len(rows), L] the best completion of each of ``rows``, by scoring every completion at once."""
    device = rows.device
    candidates, owner = [], []
    for j, b in enumerate(rows.tolist()):
        positions = dist.masked[b].nonzero().flatten()
        ids = dist.candidate_ids[b, positions]                                # [m, k]
        k = ids.shape[-1]
        codes = torch.arange(k ** len(positions), device=device)
        digits = (codes.unsqueeze(-1) // k ** torch.arange(len(positions), device=device)) % k
        x = dist.tokens[b].expand(len(codes), -1).clone()
        x[:, positions] = ids[torch.arange(len(positions), device=device), digits]          # [k^m, L]
        candidates.append(x)
        owner.append(torch.full((len(x),), j, device=device))
    x, owner = torch.cat(candidates), torch.cat(owner)
    valid = (x < torch.tensor(dist.model.vocab_sizes, device=device)).all(-1)    # within each position's vocab
    x, owner = x[valid], owner[valid]
    score = dist.score(x, rows[owner])
    return torch.stack([x[owner == j][score[owner == j].argmax()] for j in range(len(rows))])
