"""The checkpoints of a layer-training run: everything needed to continue it bit for bit (the layer,
a jointly trained backbone, the optimizer, every random stream, the step counter and the history),
written by rank 0 as ``step-<n>`` checkpoints, the newest :data:`KEEP` kept."""
from __future__ import annotations

import pathlib
from dataclasses import dataclass

import torch

from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_layer_state, save_checkpoint
from .distributed import World
from .optim import flatten_optimizer, load_optimizer

__all__ = ["TrainingCheckpoints", "Resumed", "KEEP"]

KEEP = 2
KIND = "codd-training"


@dataclass
class Resumed:
    """Where a resumed run stands: its step, wall-clock seconds so far, history and this rank's
    dropout stream."""
    step: int
    seconds: float
    history: list[dict]
    torch_rng: torch.Tensor | None


class TrainingCheckpoints:
    """``directory``'s checkpoints of one run of ``layer`` (and ``backbone`` when it trains too)."""

    def __init__(self, directory, world: World, layer, backbone, optimizer, data_gen: torch.Generator,
                 settings: dict):
        self.directory = pathlib.Path(directory)
        self.world, self.layer, self.backbone = world, layer, backbone
        self.optimizer, self.data_gen, self.settings = optimizer, data_gen, settings

    def save(self, step: int, seconds: float, history: list[dict]) -> None:
        """Every rank calls this (the random streams are gathered); rank 0 writes."""
        rng_states = self.world.gather(torch.get_rng_state())
        if self.world.is_main:
            tensors = {f"layer.{k}": v for k, v in self.layer.state_dict().items()}
            if self.backbone is not None:
                tensors.update({f"backbone.{k}": v for k, v in self.backbone.state_dict().items()})
            opt_tensors, opt_config = flatten_optimizer(self.optimizer)
            tensors.update(opt_tensors)
            tensors.update({f"rng.torch.{r}" if r else "rng.torch": state for r, state in enumerate(rng_states)})
            tensors["rng.data"] = self.data_gen.get_state()
            config = {"kind": KIND, "layer": self.layer.config(), "train": self.settings, "step": step,
                      "seconds": seconds, "history": history, "optimizer": opt_config}
            save_checkpoint(self.directory / f"step-{step:09d}", tensors, config)
            for old in sorted(self.directory.glob("step-*.json"))[:-KEEP]:
                old.with_suffix(".safetensors").unlink(missing_ok=True)
                old.unlink()
        self.world.barrier()

    def resume(self) -> Resumed | None:
        """Load the newest checkpoint into the run (None when there is none yet)."""
        found = latest_checkpoint(self.directory)
        if len(set(self.world.gather(found and found.name))) > 1:
            raise CheckpointError(f"the ranks see different checkpoints in {self.directory}: resuming needs a "
                                  f"directory every rank shares")
        if found is None:
            return None
        tensors, config = load_checkpoint(self.directory)
        if config.get("kind") != KIND:
            raise CheckpointError(f"{self.directory}: not a CoDD training checkpoint")
        diff = {k: (config["train"].get(k), v) for k, v in self.settings.items() if config["train"].get(k) != v}
        if diff:
            raise CheckpointError(f"cannot resume: the run's settings differ from the checkpoint's "
                                  f"(checkpoint, now): {diff}")
        load_layer_state(self.layer, self.directory, tensors, config)
        if self.backbone is not None:
            self.backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in tensors.items()
                                           if k.startswith("backbone.")})
        load_optimizer(self.optimizer, tensors, config["optimizer"])
        self.data_gen.set_state(tensors["rng.data"])
        # a checkpoint written by fewer ranks has no stream for this one: the caller keeps its fresh one
        rank = self.world.rank
        torch_rng = tensors.get(f"rng.torch.{rank}" if rank else "rng.torch")
        return Resumed(config["step"], config["seconds"], config["history"], torch_rng)
