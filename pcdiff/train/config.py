"""The settings of a training run, checked when they are made: every run is bounded by a number of
steps (never by seconds), so the same seed and settings give the same model on the same machine."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields

import torch

from ..arguments import check_flag, check_int, check_number
from .noise import check_draw

__all__ = ["BackboneTrainingConfig", "LayerTrainingConfig", "make_config"]


@dataclass
class BackboneTrainingConfig:
    """Adam on the masked diffusion loss for ``steps`` steps: linear warmup over ``warmup_steps``
    (at most a tenth of the run), then cosine decay to 10% of ``lr``; held-out loss every
    ``eval_every`` steps (None: only at the end). ``elbo_draw``: how each step draws the ELBO's noise,
    "time" (t ~ U(0, 1), weight 1/t) or "count" (k ~ U{1..L} masked, weight L/k; same expectation, less
    variance: :func:`~pcdiff.train.noise.mask_count_noise`)."""
    steps: int
    batch_size: int = 128
    lr: float = 3e-3
    warmup_steps: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int | None = 500
    progress: bool = True
    elbo_draw: str = "time"

    def __post_init__(self):
        check_int("steps", self.steps, 1)
        check_draw(self.elbo_draw, "elbo_draw")
        check_int("batch_size", self.batch_size, 1)
        check_int("warmup_steps", self.warmup_steps, 0)
        check_int("eval_every", self.eval_every, 1, optional=True)
        check_int("seed", self.seed, 0)
        check_number("lr", self.lr)
        check_number("grad_clip", self.grad_clip)
        check_flag("progress", self.progress)

    def lr_factor(self, step: int) -> float:
        """The learning rate at ``step`` as a fraction of ``lr``."""
        warmup = min(self.warmup_steps, self.steps // 10)
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1.0 + math.cos(math.pi * min(step / self.steps, 1.0)))


@dataclass
class LayerTrainingConfig:
    """Adam on the CoDD diffusion objective until ``steps`` (total, counting resumed ones).

    ``freeze_backbone`` (default) trains only the layer: the circuit at ``lr``, the adapter at
    ``adapter_lr`` (default ``lr / 10``: its outputs sum over the backbone's hidden units, so the same
    step moves them further); otherwise the backbone trains jointly at ``backbone_lr`` (default ``lr``)
    and is not cached. A frozen backbone's outputs are cached for ``cache_maskings`` fixed maskings of
    every training item. Held-out evaluation (the objective on the first ``eval_items`` held-out
    rows, CoDD and factorized) runs every ``eval_every`` steps and at the end; checkpoints go to
    ``checkpoint_dir`` every ``checkpoint_every`` (default ``eval_every``) steps and at the end;
    ``resume`` continues the newest one there (same step counter, optimizer and RNG states).
    ``em_init_epochs`` > 0 first fits the circuit alone to the training rows by that many epochs of
    mini-batch EM (a warm start; skipped when resuming). ``elbo_draw``: how the training maskings are
    drawn, as for the backbone (:class:`BackboneTrainingConfig`); the held-out objective keeps the time
    draw, so runs with either draw report comparable numbers.
    """
    steps: int
    batch_size: int = 128
    lr: float = 1e-2
    adapter_lr: float | None = None
    backbone_lr: float | None = None
    grad_clip: float = 1.0
    seed: int = 0
    freeze_backbone: bool = True
    cache_backbone: bool = True
    cache_maskings: int = 4
    cache_dtype: torch.dtype = torch.float32
    eval_every: int | None = 200
    eval_items: int = 2000
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_every: int | None = None
    resume: bool = False
    progress: bool = True
    em_init_epochs: int = 0
    elbo_draw: str = "time"

    def __post_init__(self):
        check_int("steps", self.steps, 0)
        check_draw(self.elbo_draw, "elbo_draw")
        check_int("em_init_epochs", self.em_init_epochs, 0)
        check_int("batch_size", self.batch_size, 1)
        check_int("cache_maskings", self.cache_maskings, 1)
        check_int("eval_every", self.eval_every, 1, optional=True)
        check_int("checkpoint_every", self.checkpoint_every, 1, optional=True)
        check_int("eval_items", self.eval_items, 0)
        check_int("seed", self.seed, 0)
        check_number("lr", self.lr)
        check_number("adapter_lr", self.adapter_lr, optional=True)
        check_number("backbone_lr", self.backbone_lr, optional=True)
        check_number("grad_clip", self.grad_clip)
        for name in ("freeze_backbone", "cache_backbone", "resume", "progress"):
            check_flag(name, getattr(self, name))
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, (str, os.PathLike)):
            raise ValueError(f"checkpoint_dir must be a path or None, got {self.checkpoint_dir!r}")
        if self.cache_dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise ValueError(f"cache_dtype must be a float dtype, got {self.cache_dtype!r}")
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs a checkpoint_dir")

    @property
    def cached(self) -> bool:
        return self.freeze_backbone and self.cache_backbone

    @property
    def every_checkpoint(self) -> int | None:
        return self.checkpoint_every or self.eval_every

    def run_settings(self, num_train: int) -> dict:
        """What a resumed run must share with the checkpoint it continues (JSON-able)."""
        keep = ("seed", "batch_size", "lr", "freeze_backbone", "cache_backbone", "cache_maskings", "cache_dtype",
                "adapter_lr", "backbone_lr", "grad_clip", "em_init_epochs", "elbo_draw")
        settings = {k: v for k, v in asdict(self).items() if k in keep}
        settings["cache_dtype"] = str(self.cache_dtype).removeprefix("torch.")
        return {**settings, "num_train": num_train}


def make_config(kind, config, settings: dict):
    """``config`` (an instance of ``kind``) or ``kind(**settings)``, not both: a trainer's two ways
    of being told its settings."""
    if config is not None and settings:
        raise ValueError(f"give a {kind.__name__} or keyword settings, not both (got {sorted(settings)})")
    if config is None:
        known = {f.name for f in fields(kind)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise TypeError(f"unknown {kind.__name__} setting(s) {unknown}; known: {sorted(known)}")
        return kind(**settings)
    if not isinstance(config, kind):
        raise TypeError(f"config must be a {kind.__name__}, got {type(config).__name__}")
    return config
