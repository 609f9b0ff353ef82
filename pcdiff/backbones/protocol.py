"""The contract every backbone meets: a noisy sequence in, per-position logits over the clean tokens and
features out, whatever the model's noise.

Two kinds of denoiser meet it (``Backbone.noise``):

* ``"mask"`` (absorbing noise: LLaDA, Dream, MDLM, BERT-style MLMs): positions still to be decided hold
  ``mask_id``;
* ``"uniform"`` (DiffusionGemma, uniform-noise diffusion): positions still to be decided hold uniformly
  random tokens, so no token tells them apart; the decoder keeps that set itself, and ``mask_id`` is None.

Everything above the backbone (the CoDD layer, its circuit, the training objective) sees only the
positions to decide as a boolean tensor, never a mask id.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Backbone", "BackboneOutput", "NOISE_KINDS", "check_tokens"]

#: the corruptions a backbone may be trained with (see the module docstring)
NOISE_KINDS = ("mask", "uniform")


@dataclass
class BackboneOutput:
    """What a backbone says about each position.

    logits: [B, L, V] unnormalized scores over the output vocabulary for the token *at* each position.
    hidden: [B, L, D] the features those logits were computed from (for context-conditioned adapters).
    """

    logits: torch.Tensor
    hidden: torch.Tensor


def check_tokens(tokens: torch.Tensor, vocab_size: int, mask_id: int | None) -> None:
    """Raise ValueError unless ``tokens`` is a [B, L] long tensor of ids in [0, V) or == mask_id
    (``mask_id`` None: a uniform-noise model, ids in [0, V) only)."""
    if not isinstance(tokens, torch.Tensor):
        raise ValueError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be 2-D [batch, length], got shape {tuple(tokens.shape)}")
    if tokens.dtype != torch.long:
        raise ValueError(f"tokens must have dtype torch.long, got {tokens.dtype}")
    if tokens.numel() == 0:
        raise ValueError(f"tokens must be non-empty, got shape {tuple(tokens.shape)}")
    bad = (tokens < 0) | (tokens >= vocab_size)
    if mask_id is not None:
        bad &= tokens != mask_id
    if bad.any():
        b, i = (int(x) for x in bad.nonzero()[0])
        allowed = f"in [0, {vocab_size})" + ("" if mask_id is None else f" nor the mask id {mask_id}")
        raise ValueError(f"tokens[{b}, {i}] = {int(tokens[b, i])} is not {allowed} ({int(bad.sum())} bad ids in all)")


class Backbone(nn.Module, abc.ABC):
    """A diffusion language model seen through one method.

    Subclasses set ``vocab_size`` (V, the output vocabulary), ``noise`` (one of :data:`NOISE_KINDS`),
    ``mask_id`` (masked models: readable in inputs, inside or outside [0, V); uniform-noise models:
    None) and ``hidden_size`` (D), and implement ``compute``.
    ``forward`` validates the input first so every backbone fails the same clear way.
    """

    vocab_size: int
    noise: str = "mask"
    mask_id: int | None
    hidden_size: int

    def forward(self, tokens: torch.Tensor) -> BackboneOutput:
        check_tokens(tokens, self.vocab_size, self.mask_id)
        return self.compute(tokens)

    @abc.abstractmethod
    def compute(self, tokens: torch.Tensor) -> BackboneOutput:
        """tokens [B, L] (already validated) -> BackboneOutput(logits [B, L, V], hidden [B, L, D])."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
