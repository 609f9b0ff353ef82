"""Training the autoregressive model that the decoder's ``codd="ar_product"`` mixes in: next-token
cross-entropy on the same items the diffusion backbone learns from, run by the shared loop."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..backbones.autoregressive import TinyCausalTransformer
from ..data import ItemData
from .backbone import train_model
from .config import BackboneTrainingConfig, make_config

__all__ = ["AutoregressiveTrainingConfig", "next_token_loss", "heldout_next_token_loss", "train_autoregressive"]


@dataclass
class AutoregressiveTrainingConfig(BackboneTrainingConfig):
    """The backbone's settings, checked the same way, for the next-token loss: Adam for ``steps``
    steps (never seconds), linear warmup over ``warmup_steps`` (at most a tenth of the run) then cosine
    decay to 10% of ``lr``, data and dropout drawn from ``seed``; held-out loss every ``eval_every``
    steps (None: only at the end)."""


def next_token_loss(model: TinyCausalTransformer, x0: torch.Tensor) -> torch.Tensor:
    """Scalar mean −log p_AR(x_i | x_<i) over every position of ``x0`` [B, L] (nats per token): the
    model's logits at i already condition on the tokens before i only."""
    if not isinstance(x0, torch.Tensor) or x0.dim() != 2 or x0.dtype != torch.long:
        raise ValueError(f"x0 must be a [batch, length] long tensor, got {getattr(x0, 'dtype', type(x0))} "
                         f"{tuple(getattr(x0, 'shape', ()))}")
    if ((x0 < 0) | (x0 >= model.vocab_size)).any():
        raise ValueError(f"x0 must hold clean tokens in [0, {model.vocab_size}) (no mask ids)")
    logits = model(x0).logits                                                   # [B, L, V]
    return F.cross_entropy(logits.transpose(1, 2).float(), x0)


@torch.no_grad()
def heldout_next_token_loss(model: TinyCausalTransformer, x0: torch.Tensor, batch_size: int = 512) -> float:
    """Mean :func:`next_token_loss` per token over the rows of ``x0`` (no noise: exact and repeatable)."""
    if len(x0) == 0:
        raise ValueError("x0 has no rows to evaluate")
    was_training = model.training
    model.eval()
    total = sum(next_token_loss(model, x0[i:i + batch_size].to(model.device)).item() * len(x0[i:i + batch_size])
                for i in range(0, len(x0), batch_size))
    model.train(was_training)
    return total / len(x0)


def train_autoregressive(model: TinyCausalTransformer, data: ItemData,
                         config: AutoregressiveTrainingConfig | None = None, **settings) -> dict:
    """Adam on :func:`next_token_loss` for ``config.steps`` steps (an :class:`AutoregressiveTrainingConfig`,
    or its fields as keywords), with :func:`pcdiff.train.loop.run_steps`.

    Deterministic for a given seed and step count (data and dropout draw from seeded generators; the
    global RNG state is left untouched). Leaves the model in eval mode. Returns {"steps", "seconds",
    "train_loss" (mean of the last 50 steps), "heldout_loss" (None without held-out items), "history"}.
    """
    config = make_config(AutoregressiveTrainingConfig, config, settings)
    if not isinstance(model, TinyCausalTransformer):
        raise TypeError(f"model must be a TinyCausalTransformer (logits at i read only tokens before i), "
                        f"got {type(model).__name__}")
    if not isinstance(data, ItemData):
        raise TypeError(f"data must be an ItemData, got {type(data).__name__}")
    if data.vocab.size != model.vocab_size or data.vocab.mask_id != model.mask_id:
        raise ValueError(f"data vocabulary (size {data.vocab.size}, mask {data.vocab.mask_id}) does not match the "
                         f"model (vocab_size {model.vocab_size}, mask_id {model.mask_id})")
    if data.block_length > model.block_length:
        raise ValueError(f"data items are {data.block_length} long, more than the model's block_length "
                         f"{model.block_length}")
    return train_model(model, data, config, lambda m, x0, generator: next_token_loss(m, x0),
                       lambda heldout: {"heldout_loss": heldout_next_token_loss(model, heldout)},
                       "train autoregressive")
