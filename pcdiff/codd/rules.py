"""The rules that decide which masked positions are decided first, and the one categorical draw.

One vocabulary for every path that orders positions: the decoder's remasking (which proposed
tokens a step commits) and the CoDD distribution's any-order sampler (which position it draws
next) rank positions with the same :func:`confidence` scores, under the names LLaDA uses:

  low_confidence  the probability of the position's token (for ranking before a token is drawn:
                  the largest probability, i.e. the most confident position);
  margin          top-1 minus top-2 probability;
  entropy         exp(-entropy) (lowest entropy first);
  random          uniform noise.

Every score lies in [0, 1], so one confidence ``threshold`` (Fast-dLLM) fits all rules.

Every categorical draw goes through :func:`draw` (``structures.gumbel_argmax``). A draw made one
position at a time, where each position's distribution depends on the tokens drawn before it (the
decoder's AR product), takes the block's noise ahead from :func:`gumbel_noise`: the same values the
one-shot draw of the block would add, so both paths draw the same tokens from the same distributions.
"""
from __future__ import annotations

import torch

import structures
from structures import gumbel_noise  # the noise draw() adds, drawn ahead for a draw made position by position

__all__ = ["REMASKING", "check_rule", "confidence", "entropy", "draw", "gumbel_noise"]

REMASKING = ("low_confidence", "margin", "entropy", "random")


def check_rule(rule: str, name: str = "remasking") -> str:
    """``rule`` if it is one of :data:`REMASKING`; else a ValueError naming the argument."""
    if rule not in REMASKING:
        raise ValueError(f"{name} must be one of {REMASKING}, got {rule!r}")
    return rule


def confidence(rule: str, probs: torch.Tensor, tokens: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """How sure each position is, by ``rule``: probs [B, L, V] -> scores [B, L]; higher goes first.

    ``tokens`` [B, L] are the proposed tokens (indices on probs' last axis) that "low_confidence"
    scores; None ranks positions before any token is drawn, by their most likely one.
    """
    if rule == "low_confidence":
        if tokens is None:
            return probs.amax(-1)
        return probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if rule == "margin":
        if probs.shape[-1] == 1:
            return probs[..., 0]
        top = probs.topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]
    if rule == "entropy":
        return torch.exp(-entropy(probs))
    if rule == "random":
        return torch.rand(probs.shape[:-1], generator=generator, device=probs.device)
    raise ValueError(f"remasking must be one of {REMASKING}, got {rule!r}")


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """The entropy in nats of each position's distribution: probs [..., V] -> [...] (the "entropy"
    rule's score is its exp(-·); the entropy-bound count sums it)."""
    return torch.special.entr(probs.clamp_min(0)).sum(-1)                  # exact marginals may dip below 0


def draw(probs: torch.Tensor, greedy: bool = False, generator: torch.Generator | None = None,
         noise: torch.Tensor | None = None) -> torch.Tensor:
    """One token per position from probs [..., V] -> [...]: the argmax when ``greedy``, else an exact
    draw by :func:`structures.gumbel_argmax`, the draw every sampler of the project makes (the same
    generator state gives the same token on every path that makes the same draw). A token of
    probability 0 (a banned mask id) is never drawn while another has mass.

    ``noise`` [..., V]: Gumbel noise drawn ahead by :func:`gumbel_noise` (instead of the generator);
    the same Gumbel-max draw with noise that was fixed before ``probs`` was known."""
    if greedy:
        return probs.argmax(-1)
    with torch.no_grad():
        return structures.gumbel_argmax(torch.log(probs.clamp_min(0)), generator, noise)

