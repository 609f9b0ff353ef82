"""Hostile edits of saved checkpoints and run folders, the way a tester (or a bad disk, or a hand edit)
would make them: the JSON changed, or tensors replaced with the SHA-256 recomputed so that the
hash check passes and only the deeper checks can catch the edit."""
from __future__ import annotations

import hashlib
import json
import pathlib

import torch
from safetensors.torch import load_file, save_file


def edit_json(path: pathlib.Path, edit) -> None:
    """Apply ``edit(record) -> None`` (in place) to a JSON file."""
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


def replace_tensors(meta: pathlib.Path, change) -> None:
    """Apply ``change(tensors) -> None`` (in place) to a checkpoint's tensors, rewrite its tensor file and
    record the new file's SHA-256 in ``meta`` (the checkpoint's JSON), so the hash check still passes."""
    record = json.loads(meta.read_text())
    weights = meta.with_name(record["tensors"])
    tensors = load_file(str(weights))
    change(tensors)
    save_file(tensors, str(weights))
    record["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    meta.write_text(json.dumps(record))


def poison(meta: pathlib.Path, name: str | None = None, value: float = float("nan")) -> str:
    """Set one entry of the float tensor ``name`` (default: the first float one) to ``value``; returns the name."""
    chosen = []

    def change(tensors):
        key = name or next(k for k, v in tensors.items() if v.is_floating_point())
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[0] = value
        chosen.append(key)

    replace_tensors(meta, change)
    return chosen[0]


def hold_lock(path: pathlib.Path):
    """An open descriptor of ``path`` holding an exclusive flock, as a live writer holds its temporary."""
    import fcntl
    import os
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def tiny_layer_config(**changes) -> dict:
    """A small valid CoDDLayer config (as ``layer.json`` holds under ``"layer"``), with ``changes``."""
    from pcdiff import CoDDLayer
    config = CoDDLayer.from_structure("hmm", 4, 5, num_states=3, dtype=torch.float32).config()
    config.update(changes)
    return config
