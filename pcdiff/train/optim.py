"""Optimizer state in and out of a checkpoint: the tensors go to the safetensors file (no pickle),
the scalars and parameter groups to the JSON beside it."""
from __future__ import annotations

import torch

from .checkpoint import CheckpointError

__all__ = ["flatten_optimizer", "load_optimizer"]


def flatten_optimizer(optimizer) -> tuple[dict, dict]:
    """An optimizer's state as (tensors for a safetensors file, JSON-able settings)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer(optimizer, tensors: dict, config: dict) -> None:
    """Restore what :func:`flatten_optimizer` wrote; a state that does not fit is a CheckpointError."""
    state: dict = {}
    entries = [(name.removeprefix("optim."), value) for name, value in tensors.items() if name.startswith("optim.")]
    entries += list(config["scalars"].items())
    for name, value in entries:
        index, _, key = str(name).partition(".")
        if not index.isdigit() or not key:
            raise CheckpointError(f"the checkpoint's optimizer entry {name!r} is not '<parameter index>.<key>'")
        state.setdefault(int(index), {})[key] = value
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, entry in state.items():
        for key, value in entry.items():        # a wrong shape would only fail at the next step, mid-run
            if isinstance(value, torch.Tensor) and value.dim() and (
                    index >= len(params) or value.shape != params[index].shape):
                raise CheckpointError(f"the checkpoint's optimizer state optim.{index}.{key} has shape "
                                      f"{tuple(value.shape)}, which fits no parameter {index} of this run")
    try:
        optimizer.load_state_dict({"state": state, "param_groups": config["param_groups"]})
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
        raise CheckpointError(f"the optimizer state in the checkpoint does not match this run: {err}") from None
