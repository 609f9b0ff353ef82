"""The checkpoints of a layer-training run: everything needed to continue it bit for bit (the layer,
a jointly trained backbone, the optimizer, every random stream, the step counter and the history),
written by rank 0 as ``step-<n>`` checkpoints, the newest :data:`KEEP` kept.

What a killed run leaves in the directory (the temporaries of a write cut short, a tensor file
whose JSON was never written) is deleted when the next run opens the directory; a checkpoint is
read back as untrusted input, every field checked (:class:`~pcdiff.train.checkpoint.CheckpointError`
naming the file and the field)."""
from __future__ import annotations

import pathlib
from dataclasses import dataclass

import torch

from ..files import remove_stale_temporaries
from ..arguments import is_int
from .checkpoint import (CheckpointError, check_state, checkpoint_path, latest_checkpoint, load_checkpoint,
                         load_layer_state, save_checkpoint)
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
        if world.is_main:
            self.clean()

    def clean(self) -> None:
        """Delete what killed writes left: abandoned temporaries, and tensor files without their JSON
        (the JSON is written last, so such a file never became a checkpoint)."""
        remove_stale_temporaries(self.directory, "step-*")
        for weights in self.directory.glob("step-*.safetensors"):
            if not weights.with_suffix(".json").exists():
                weights.unlink(missing_ok=True)

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
                old.unlink()                                     # first the JSON: a kill here leaves no
                old.with_suffix(".safetensors").unlink(missing_ok=True)   # checkpoint without its tensors
        self.world.barrier()

    def resume(self) -> Resumed | None:
        """Load the newest checkpoint into the run (None when there is none yet)."""
        found = latest_checkpoint(self.directory)
        if len(set(self.world.gather(found and found.name))) > 1:
            raise CheckpointError(f"the ranks see different checkpoints in {self.directory}: resuming needs a "
                                  f"directory every rank shares")
        if found is None:
            return None
        path = checkpoint_path(self.directory)
        tensors, config = load_checkpoint(path)
        _check_fields(path, config)
        saved = {"elbo_draw": "time", **config["train"]}    # written before the count draw: the time draw
        diff = {k: (saved.get(k), v) for k, v in self.settings.items() if saved.get(k) != v}
        if diff:
            raise CheckpointError(f"cannot resume: the run's settings differ from the checkpoint's "
                                  f"(checkpoint, now): {diff}")
        load_layer_state(self.layer, path, tensors, config)
        if self.backbone is not None:
            state = {k.removeprefix("backbone."): v for k, v in tensors.items() if k.startswith("backbone.")}
            check_state(self.backbone, state, f"{path}: the jointly trained backbone")
            self.backbone.load_state_dict(state)
        load_optimizer(self.optimizer, tensors, config["optimizer"])
        # a checkpoint written by fewer ranks has no stream for this one: the caller keeps its fresh one
        rank = self.world.rank
        torch_rng = tensors.get(f"rng.torch.{rank}" if rank else "rng.torch")
        for name, state in (("rng.data", tensors.get("rng.data")), ("rng.torch", torch_rng)):
            if state is not None and state.dtype != torch.uint8:
                raise CheckpointError(f"{path}: tensor {name!r} must be a random generator state (uint8), "
                                      f"got {state.dtype}")
        try:
            self.data_gen.set_state(tensors["rng.data"])
        except (KeyError, RuntimeError) as err:
            raise CheckpointError(f"{path}: tensor 'rng.data' is missing or not a generator state ({err})") from None
        return Resumed(config["step"], config["seconds"], config["history"], torch_rng)


def _check_fields(path, config: dict) -> None:
    """The JSON fields :meth:`TrainingCheckpoints.resume` reads, with their types."""
    if config.get("kind") != KIND:
        raise CheckpointError(f"{path}: not a CoDD training checkpoint (config.kind is {config.get('kind')!r})")
    step, history, optimizer = config.get("step"), config.get("history"), config.get("optimizer")
    fields = {"train": isinstance(config.get("train"), dict),
              "step": is_int(step) and step >= 0,
              "seconds": isinstance(config.get("seconds"), (int, float)) and config.get("seconds") is not True
              and config.get("seconds") is not False,
              "history": isinstance(history, list) and all(isinstance(h, dict) for h in history),
              "optimizer": isinstance(optimizer, dict) and isinstance(optimizer.get("param_groups"), list)
              and isinstance(optimizer.get("scalars"), dict)}
    for field, ok in fields.items():
        if not ok:
            raise CheckpointError(f"{path}: field 'config.{field}' is missing or of the wrong type")
