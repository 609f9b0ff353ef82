"""What the backbone's logits become for the circuit: dense soft evidence, or top-k candidate evidence.

Dense: ``e_i = log softmax(logits_i / T)`` at every masked position, [B, L, V]; the circuit's leaves
then cost L·H·V per block. Top-k (large vocabularies): each masked position keeps only its k most
likely tokens S_i, and p̂ becomes the *restricted* product of experts

    p̂_k(x) ∝ C(x) · Π_{i masked} q_i(x_i) · 1[x_i ∈ S_i],

exact on that support (renormalized over it) at a leaf cost of L·H·k (the core's
:class:`structures.CandidateEvidence`). With k = V it is p̂ itself. The potentials stay the
full-vocabulary log-probabilities log q_i(v), so log Z_k ≤ log Z with equality at k = V.

Training with top-k needs the ground truth inside the support: ``force_include=x0`` puts x0_i in
S_i when it is missing, in place of the least likely candidate (as the later pyjuice versions of
CoDD do).
The support then depends on x0: the loss is that of a distribution built around the target, and
since its normalizer sums over a subset of completions, −log p̂_k(x0) ≤ −log p̂(x0) (equal at k = V).
Report held-out numbers of a top-k layer as such.
"""
from __future__ import annotations

import torch

import structures

__all__ = ["soft_evidence", "candidate_evidence", "check_top_k"]


def _normalized(logits: torch.Tensor, temperature: torch.Tensor):
    """z = logits / T [..., V] (``temperature`` broadcasts as [..., 1]), log Σ_v exp z [..., 1], and
    which rows are all -inf [..., 1].

    Those rows are zeroed in z (and their normalizer recomputed): a softmax over them is undefined,
    and a NaN in their gradient would leak into the whole batch even where they are discarded.
    """
    z = logits / temperature
    log_norm = torch.logsumexp(z, dim=-1, keepdim=True)
    dead = torch.isneginf(log_norm)
    if bool(dead.any()):
        z = torch.where(dead, torch.zeros((), dtype=z.dtype, device=z.device), z)
        log_norm = torch.logsumexp(z, dim=-1, keepdim=True)
    return z, log_norm, dead


def _in_vocab(banned: int | None, vocab: int) -> bool:
    return banned is not None and 0 <= banned < vocab


def soft_evidence(logits: torch.Tensor, masked: torch.Tensor, temperature: torch.Tensor,
                  banned: int | None = None) -> torch.Tensor:
    """log_softmax(logits / T) at masked positions (-inf at token ``banned``), 0 at decoded ones: [B, L, V].

    A masked row whose logits are all -inf stays all -inf (an impossible block, reported by the
    caller) instead of turning into NaN; the banned token keeps its share of the normalizer.
    """
    z, log_norm, dead = _normalized(logits, temperature.reshape(-1, 1, 1))
    keep = masked.unsqueeze(-1)                                              # [B, L, 1]
    fill = torch.where(dead & keep, float("-inf"), 0.0).to(z.dtype)          # [B, L, 1]: dead masked rows, decoded rows
    e = torch.where(keep & ~dead, z - log_norm, fill)
    if _in_vocab(banned, e.shape[-1]):
        e[..., banned] = torch.where(masked, float("-inf"), e[..., banned])   # e is fresh: no copy of [B, L, V]
    return e


def check_top_k(top_k, vocab: int) -> int | None:
    """``top_k`` must be None or an int in [1, vocab]."""
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= vocab:
        raise ValueError(f"top_k must be None or an int in [1, {vocab}] (the vocabulary size), got {top_k!r}")
    return top_k


def candidate_evidence(logits: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor, temperature: torch.Tensor,
                       top_k: int, banned: int | None = None,
                       force_include: torch.Tensor | None = None) -> structures.CandidateEvidence:
    """Top-k candidate evidence [B, L, k] of a block.

    At masked positions: the k most likely tokens of softmax(logits / T) other than ``banned``, in
    increasing token order, and their log-probabilities, normalized over the whole vocabulary; with
    ``force_include`` [B, L], its token replaces the least likely candidate where it is missing. At
    decoded positions: the decoded token with potential 0 in slot 0 (the other slots repeat it at
    -inf). Differentiable w.r.t. the logits. Costs one top-k and one log-sum-exp over [B, L, V].

    Token order makes every draw over the slots the same draw as over the vocabulary: with k = V a
    seed gives the tokens of the dense distribution.
    """
    rows = masked.nonzero(as_tuple=True)                                     # only masked positions need candidates
    z, log_norm, dead = _normalized(logits[rows], temperature[rows[0]].unsqueeze(-1))    # [M, V], [M, 1], [M, 1]
    vocab = z.shape[-1]
    ban = _in_vocab(banned, vocab)
    scores, ids = z.detach().topk(min(top_k + ban, vocab), dim=-1, sorted=False)    # [M, k (+1)]
    if ban and top_k < vocab:                  # one spare slot: drop the banned token, else the least likely
        is_banned = ids == banned
        drop = torch.where(is_banned.any(-1), is_banned.long().argmax(-1), scores.argmin(-1))
        kept = torch.arange(top_k + 1, device=ids.device) != drop.unsqueeze(-1)
        ids, scores = ids[kept].view(-1, top_k), scores[kept].view(-1, top_k)
    if force_include is not None:
        target = force_include[rows].unsqueeze(-1)                            # [M, 1]
        missing = ~(ids == target).any(-1, keepdim=True)
        lowest = scores.argmin(-1, keepdim=True)
        ids = ids.scatter(-1, lowest, torch.where(missing, target, ids.gather(-1, lowest)))
    ids = ids.sort(dim=-1).values
    pot = z.gather(-1, ids) - log_norm                                       # [M, k]
    if ban:
        pot = pot.masked_fill(ids == banned, float("-inf"))
    pot = pot.masked_fill(dead, float("-inf"))
    # decoded positions: the token in every slot, potential 0 in slot 0 and -inf in the others
    all_ids = tokens.unsqueeze(-1).expand(*tokens.shape, top_k).index_put(rows, ids)
    decoded_pot = torch.full((top_k,), float("-inf"), dtype=pot.dtype, device=pot.device).index_fill(
        0, torch.tensor([0], device=pot.device), 0.0)
    all_pot = decoded_pot.expand(*tokens.shape, top_k).index_put(rows, pot)
    return structures.CandidateEvidence(all_ids, all_pot)
