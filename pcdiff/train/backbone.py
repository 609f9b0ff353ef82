"""Training a backbone from scratch with the masked diffusion (MDLM / LLaDA) objective, or its
uniform-noise counterpart.

Masked noise: the objective is the diffusion ELBO (MDLM, Sahoo et al., arXiv 2406.07524; LLaDA, Nie
et al., arXiv 2502.09992): the 1/t-weighted cross-entropy of the clean tokens at the masked positions,
or the same bound with t integrated out (``elbo_draw="count"``: a uniform number of masked positions,
weighed by L/k; :func:`~pcdiff.train.noise.mask_count_noise`), which has the same expectation and far
less variance.

Uniform noise (``backbone.noise == "uniform"``): the same schedule and the same loss, the corrupted
positions holding uniformly random tokens instead of the mask id. It is *not* the uniform-noise
ELBO (UDLM, Schiff et al., arXiv 2412.10193; SEDD, Lou et al., arXiv 2310.16834, which also score
the uncorrupted positions and weight differently), so its value bounds no likelihood. It is what
the decoder and the CoDD layer ask of the model: at a corrupted position (the decoder knows which
they are, the model does not) the logits are trained toward p(x0_i | x_t, i corrupted), the
conditional the layer multiplies with its circuit. The 1/t weight is kept so that the two kinds
train with the same emphasis over noise levels and report comparable numbers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..backbones.protocol import Backbone
from ..data import ItemData
from .config import BackboneTrainingConfig, make_config
from .loop import Monitor, run_steps
from .noise import corrupt, elbo_draw

__all__ = ["masked_diffusion_loss", "heldout_loss", "train_backbone", "train_model", "check_data_fits",
           "diffusion_loss_for"]


def masked_diffusion_loss(backbone: Backbone, x0: torch.Tensor, generator: torch.Generator,
                          draw: str = "time") -> torch.Tensor:
    """Scalar weighted cross-entropy on corrupted positions, per token (LLaDA's normalization).

    loss = sum_b sum_{i corrupted} CE(logits[b, i], x0[b, i]) / t_b, divided by B * L, with t_b drawn
    uniformly (``draw="time"``) or the fraction k_b / L masked (``draw="count"``;
    :func:`~pcdiff.train.noise.elbo_draw`). With masked
    noise its expectation upper-bounds the per-token negative log-likelihood (the diffusion ELBO), in
    nats, either way; with uniform noise it is the same weighted cross-entropy (see the module docstring).
    """
    if x0.dim() != 2 or x0.dtype != torch.long:
        raise ValueError(f"x0 must be a [batch, length] long tensor, got {x0.dtype} {tuple(x0.shape)}")
    if ((x0 < 0) | (x0 >= backbone.vocab_size)).any():
        raise ValueError(f"x0 must hold clean tokens in [0, {backbone.vocab_size}) (no mask ids)")
    t, masked = elbo_draw(x0, generator, draw)
    logits = backbone(corrupt(x0, masked, backbone, generator)).logits  # [B, L, V]
    ce = F.cross_entropy(logits.transpose(1, 2).float(), x0, reduction="none")  # [B, L]
    weighted = (ce * masked) / t[:, None]
    return weighted.sum() / x0.numel()


@torch.no_grad()
def heldout_loss(backbone: Backbone, x0: torch.Tensor, seed: int = 1234, batch_size: int = 512,
                 draw: str = "time") -> float:
    """Mean masked diffusion loss over rows of x0 with fixed noise (same seed and ``draw`` -> comparable
    numbers)."""
    if len(x0) == 0:
        raise ValueError("x0 has no rows to evaluate")
    was_training = backbone.training
    backbone.eval()
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, len(x0), batch_size):
        chunk = x0[start:start + batch_size].to(backbone.device)
        total += masked_diffusion_loss(backbone, chunk, generator, draw).item() * len(chunk)
    backbone.train(was_training)
    return total / len(x0)


def train_backbone(backbone: Backbone, data: ItemData, config: BackboneTrainingConfig | None = None,
                   **settings) -> dict:
    """Adam on :func:`masked_diffusion_loss` for ``config.steps`` steps (a
    :class:`~pcdiff.train.config.BackboneTrainingConfig`, or its fields as keywords).

    Deterministic for a given seed and step count (data, masks and dropout all draw from seeded
    generators; the global RNG state is left untouched). Leaves the backbone in eval mode.
    Returns {"steps", "seconds", "train_loss" (mean of the last 50 steps), "heldout_loss" (None
    without held-out items), "history": one such record per evaluation}.
    """
    config = make_config(BackboneTrainingConfig, config, settings)
    check_data_fits(data, backbone)
    return train_model(backbone, data, config, diffusion_loss_for(config),
                       lambda heldout: {"heldout_loss": heldout_loss(backbone, heldout, seed=config.seed + 1,
                                                                     draw=config.elbo_draw)},
                       "train backbone")


def diffusion_loss_for(config: BackboneTrainingConfig):
    """:func:`masked_diffusion_loss` with the config's ELBO draw, as the trainer calls it."""
    return lambda backbone, x0, generator: masked_diffusion_loss(backbone, x0, generator, config.elbo_draw)


def check_data_fits(data: ItemData, backbone) -> None:
    """Raise ValueError unless ``data``'s vocabulary is the backbone's (and its mask id, for a masked
    backbone: a uniform-noise backbone reads no mask id)."""
    masked = getattr(backbone, "noise", "mask") == "mask"
    if data.vocab.size != backbone.vocab_size or (masked and data.vocab.mask_id != backbone.mask_id):
        raise ValueError(
            f"data vocabulary (size {data.vocab.size}, mask {data.vocab.mask_id}) does not match the "
            f"backbone (vocab_size {backbone.vocab_size}, mask_id {backbone.mask_id})"
        )


def train_model(model, data: ItemData, config: BackboneTrainingConfig, loss, evaluate, desc: str) -> dict:
    """One model trained alone on ``data``'s training items (the backbone's and the autoregressive
    model's trainer): Adam on ``loss(model, x0, generator)`` with the config's schedule; at each
    evaluation the record takes ``evaluate(heldout rows)`` (a dict with "heldout_loss", the field
    the progress bar shows; {"heldout_loss": None} without held-out rows). Batches, noise and
    dropout draw from seeded generators; the global RNG state is left untouched; the model ends in
    eval mode."""
    heldout = data.encode_heldout()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.99))
    data_gen = torch.Generator().manual_seed(config.seed)
    device = model.device

    def step_fn(step: int) -> tuple[torch.Tensor, float]:
        value = loss(model, data.sample_train_batch(config.batch_size, data_gen).to(device), data_gen)
        return value, value.item()

    monitor = Monitor(lambda: evaluate(heldout) if len(heldout) else {"heldout_loss": None})
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)  # dropout draws from the global RNG; fork_rng restores it after
        model.train()
        final = run_steps(step_fn, optimizer, monitor, steps=config.steps, grad_clip=config.grad_clip,
                          lr_factor=config.lr_factor, eval_every=config.eval_every, progress=config.progress,
                          desc=desc, describe=_heldout_field)
    model.eval()
    return {**final, "history": monitor.history}


def _heldout_field(record: dict) -> dict:
    """The progress bar's view of an evaluation: its numbers other than the step count and timing."""
    return {key.removesuffix("_loss"): f"{value:.3f}" for key, value in record.items()
            if key not in ("steps", "seconds", "train_loss") and isinstance(value, float)}
