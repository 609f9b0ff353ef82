"""The one training loop, shared by the backbone's and the layer's trainers: a fixed number of
optimizer steps with a progress bar that knows its total, a finite-loss check, gradient clipping,
an optional learning-rate schedule, and a :class:`Monitor` that records held-out evaluations.

What differs between trainers (how a batch becomes a loss, what an evaluation measures, what a
checkpoint holds) comes in as functions.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch
from tqdm.auto import tqdm

__all__ = ["Monitor", "run_steps"]


class Monitor:
    """The running mean of the last ``window`` training losses, and one record per evaluation:
    ``{"steps", "seconds" (wall-clock, reported only), "train_loss", **evaluate()}``."""

    def __init__(self, evaluate: Callable[[], dict], history: list[dict] | None = None, seconds_before: float = 0.0,
                 window: int = 50):
        self.evaluate, self.window = evaluate, window
        self.history: list[dict] = list(history or [])
        self.recent: list[float] = []
        self.seconds_before = seconds_before
        self.started = time.perf_counter()

    def add_loss(self, loss: float) -> None:
        self.recent = (self.recent + [loss])[-self.window:]

    @property
    def train_loss(self) -> float | None:
        return sum(self.recent) / len(self.recent) if self.recent else None

    @property
    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def record(self, step: int) -> dict:
        self.history.append({"steps": step, "seconds": self.seconds, "train_loss": self.train_loss,
                             **self.evaluate()})
        return self.history[-1]

    def final(self, step: int) -> dict:
        """The record of ``step``: the last one if it was taken there, else a new one."""
        if self.history and self.history[-1]["steps"] == step:
            return self.history[-1]
        return self.record(step)


def run_steps(step_fn: Callable[[int], tuple[torch.Tensor, float]], optimizer: torch.optim.Optimizer,
              monitor: Monitor, *, steps: int, start: int = 0, grad_clip: float = 1.0,
              lr_factor: Callable[[int], float] | None = None, eval_every: int | None = None,
              checkpoint: Callable[[int], None] | None = None, checkpoint_every: int | None = None,
              describe: Callable[[dict], dict] | None = None, progress: bool = True, desc: str = "train") -> dict:
    """Optimizer steps ``start`` .. ``steps - 1``; returns the final record of ``monitor``.

    ``step_fn(step)`` returns (the loss to differentiate, the loss to report as a float); the
    loop checks that the reported loss is finite, then zero_grad → backward → clip → step. The
    learning rate of every parameter group is its initial one times ``lr_factor(step)``. Every
    ``eval_every`` steps (and at the end) the monitor records an evaluation; every
    ``checkpoint_every`` steps (and at the end) ``checkpoint(step)`` runs. ``describe(record)`` gives
    extra progress-bar fields from a record.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    bar = tqdm(total=steps, initial=start, disable=not progress, desc=desc, unit="step")
    step = start
    while step < steps:
        if lr_factor is not None:
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * lr_factor(step)
        loss, reported = step_fn(step)
        if not math.isfinite(reported):
            raise FloatingPointError(f"{desc}: the training loss became {reported} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        step += 1
        monitor.add_loss(reported)
        bar.update(1)
        bar.set_postfix(loss=f"{monitor.train_loss:.4f}")
        if eval_every and step % eval_every == 0:
            record = monitor.record(step)
            if describe is not None:
                bar.set_postfix(loss=f"{monitor.train_loss:.4f}", **describe(record))
        if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
            checkpoint(step)
    bar.close()
    final = monitor.final(step)
    if checkpoint is not None and (not checkpoint_every or step % checkpoint_every):
        checkpoint(step)
    return final
