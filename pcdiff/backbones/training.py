"""Training a backbone from scratch with the masked diffusion (MDLM / LLaDA) objective."""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import ItemData
from .protocol import Backbone

__all__ = ["masked_diffusion_loss", "heldout_loss", "train_backbone"]

MIN_T = 1e-3  # caps the 1/t weight at 1000


def _mask_noise(x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence t ~ U(MIN_T, 1); each position masked independently with probability t.

    Returns t [B] and mask [B, L] (bool, on x0's device). Random numbers are drawn on the
    generator's device, so the same seed gives the same masks wherever the model runs.
    """
    batch, length = x0.shape
    t = torch.rand(batch, generator=generator, device=generator.device).clamp(MIN_T, 1.0)
    mask = torch.rand(batch, length, generator=generator, device=generator.device) < t[:, None]
    # a sequence with nothing masked would contribute no signal; mask one random position instead
    forced = torch.randint(length, (batch,), generator=generator, device=generator.device)
    empty = ~mask.any(dim=1)
    mask[empty, forced[empty]] = True
    return t.to(x0.device), mask.to(x0.device)


def masked_diffusion_loss(backbone: Backbone, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Scalar 1/t-weighted cross-entropy on masked positions, per token (LLaDA's normalization).

    loss = sum_b sum_{i masked} CE(logits[b, i], x0[b, i]) / t_b, divided by B * L. Its expectation
    upper-bounds the per-token negative log-likelihood (the diffusion ELBO), in nats.
    """
    if x0.dim() != 2 or x0.dtype != torch.long:
        raise ValueError(f"x0 must be a [batch, length] long tensor, got {x0.dtype} {tuple(x0.shape)}")
    if ((x0 < 0) | (x0 >= backbone.vocab_size)).any():
        raise ValueError(f"x0 must hold clean tokens in [0, {backbone.vocab_size}) (no mask ids)")
    t, mask = _mask_noise(x0, generator)
    xt = torch.where(mask, torch.full_like(x0, backbone.mask_id), x0)
    logits = backbone(xt).logits  # [B, L, V]
    ce = F.cross_entropy(logits.transpose(1, 2).float(), x0, reduction="none")  # [B, L]
    weighted = (ce * mask) / t[:, None]
    return weighted.sum() / x0.numel()


@torch.no_grad()
def heldout_loss(backbone: Backbone, x0: torch.Tensor, seed: int = 1234, batch_size: int = 512) -> float:
    """Mean masked diffusion loss over rows of x0 with fixed noise (same seed -> comparable numbers)."""
    if len(x0) == 0:
        raise ValueError("x0 has no rows to evaluate")
    was_training = backbone.training
    backbone.eval()
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, len(x0), batch_size):
        chunk = x0[start:start + batch_size].to(backbone.device)
        total += masked_diffusion_loss(backbone, chunk, generator).item() * len(chunk)
    backbone.train(was_training)
    return total / len(x0)


class _Schedule:
    """Linear warmup then cosine decay to 10% of the peak.

    Progress is measured in steps when a step budget exists (deterministic), else in elapsed
    seconds, so a time-only run still decays over the time it is given.
    """

    def __init__(self, steps: int | None, seconds: float | None, warmup_steps: int):
        self.steps, self.seconds = steps, seconds
        self.warmup = min(warmup_steps, steps // 10) if steps else warmup_steps

    def factor(self, step: int, elapsed: float) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = step / self.steps if self.steps else elapsed / self.seconds
        return 0.1 + 0.45 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def train_backbone(
    backbone: Backbone,
    data: ItemData,
    steps: int | None = None,
    seconds: float | None = None,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
    eval_every: int | None = 500,
    warmup_steps: int = 100,
    grad_clip: float = 1.0,
) -> dict:
    """Adam on masked_diffusion_loss until ``steps`` or ``seconds`` runs out, whichever is first.

    Deterministic for a given seed and step budget (data, masks and dropout all draw from
    seeded generators; the global RNG state is left untouched). Leaves the backbone in eval mode.

    Held-out evaluations (every ``eval_every`` steps and at the end) count against ``seconds``.
    Returns {"steps", "seconds", "train_loss" (mean of the last 50 steps; None if no step ran),
    "heldout_loss" (None without held-out items), "history": one such record per evaluation}.
    """
    if steps is None and seconds is None:
        raise ValueError("give steps or seconds (or both) to bound training")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if seconds is not None and seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if data.vocab.size != backbone.vocab_size or data.vocab.mask_id != backbone.mask_id:
        raise ValueError(
            f"data vocabulary (size {data.vocab.size}, mask {data.vocab.mask_id}) does not match the "
            f"backbone (vocab_size {backbone.vocab_size}, mask_id {backbone.mask_id})"
        )
    heldout = data.encode_heldout()

    def evaluate() -> float | None:
        return heldout_loss(backbone, heldout, seed=seed + 1) if len(heldout) else None

    optimizer = torch.optim.Adam(backbone.parameters(), lr=lr, betas=(0.9, 0.99))
    schedule = _Schedule(steps, seconds, warmup_steps)
    data_gen = torch.Generator().manual_seed(seed)
    history, recent = [], []
    device = backbone.device
    bar = tqdm(total=steps, disable=not progress, desc="train backbone", unit="step")
    start = time.perf_counter()
    step = 0

    def record() -> dict:
        train_loss = sum(recent) / len(recent) if recent else None
        history.append({"steps": step, "seconds": time.perf_counter() - start, "train_loss": train_loss,
                        "heldout_loss": evaluate()})
        return history[-1]

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # dropout draws from the global RNG; fork_rng restores it after
        backbone.train()
        while (steps is None or step < steps) and (seconds is None or time.perf_counter() - start < seconds):
            for group in optimizer.param_groups:
                group["lr"] = lr * schedule.factor(step, time.perf_counter() - start)
            x0 = data.sample_train_batch(batch_size, data_gen).to(device)
            loss = masked_diffusion_loss(backbone, x0, data_gen)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(backbone.parameters(), grad_clip)
            optimizer.step()
            step += 1
            recent = (recent + [loss.item()])[-50:]
            bar.update(1)
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}")
            if eval_every and step % eval_every == 0:
                heldout_now = record()["heldout_loss"]
                if heldout_now is not None:
                    bar.write(f"step {step}: train {history[-1]['train_loss']:.3f}, heldout {heldout_now:.3f}")
                backbone.train()
    bar.close()
    backbone.eval()
    final = history[-1] if history and history[-1]["steps"] == step else record()
    return {**final, "history": history}
