"""Checkpoints: tensors in a safetensors file, everything else in a JSON file beside it.

A checkpoint ``<stem>`` is ``<stem>.safetensors`` plus ``<stem>.json``. Each file is written
atomically (:mod:`pcdiff.files`); the JSON is written last and records the tensor file's SHA-256,
so a half-written or altered checkpoint is detected on load rather than silently used.

A checkpoint is read as untrusted input: its JSON must have the expected fields and types, every
float tensor must be finite (a NaN weight would otherwise come out as normal-looking samples), and
a model's config is sized from its numbers before anything is built: it may not ask for more
parameter values than its tensor file holds, nor more than :data:`pcdiff.codd.recipe.MAX_VALUES`.
Every error is a :class:`CheckpointError` naming the file and the field or tensor.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..backbones import TinyCausalTransformer, TinyDiffusionTransformer
from ..codd.layer import CoDDLayer
from ..codd.recipe import MAX_VALUES, check_config, check_size, describe_size
from ..files import atomic_write, atomic_write_text

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "checkpoint_path",
           "checkpoint_record", "save_layer", "load_layer", "load_layer_state", "check_state", "save_backbone",
           "load_backbone"]

FORMAT = "pcdiff-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not match what it is loaded into."""


def file_sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(stem: str | os.PathLike, tensors: dict[str, torch.Tensor], config: dict) -> pathlib.Path:
    """Write ``stem.safetensors`` and ``stem.json``; returns the JSON path."""
    stem = pathlib.Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    weights = stem.with_name(stem.name + ".safetensors")
    meta = stem.with_name(stem.name + ".json")
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(weights, lambda p: save_file(flat, str(p)))
    record = {"format": FORMAT, "version": VERSION, "tensors": weights.name, "sha256": file_sha256(weights),
              "config": config}
    atomic_write_text(meta, json.dumps(record, indent=1))
    return meta


def checkpoint_path(path: str | os.PathLike) -> pathlib.Path:
    """The JSON file a checkpoint ``path`` names: itself, ``<stem>.json``, or in a directory the newest."""
    path = pathlib.Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"no checkpoint (*.json) in directory {path}")
        path = found
    if path.suffix != ".json":
        path = path.with_name(path.name + ".json")
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    return path


def read_json(path: pathlib.Path, what: str):
    """The JSON value in ``path``; a CheckpointError naming the file (as ``what``) if it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt {what} (not valid JSON: {err})") from None


def _record(path: pathlib.Path) -> dict:
    """A checkpoint's JSON, its fields checked."""
    record = read_json(path, "checkpoint metadata")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file")
    if record.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {record.get('version')!r}, this code reads {VERSION}")
    name = record.get("tensors")
    if not isinstance(name, str) or name in ("", ".", "..") or pathlib.PurePath(name).name != name:
        raise CheckpointError(f"{path}: field 'tensors' must name a file beside it, got {name!r}")
    if not isinstance(record.get("config"), dict):
        raise CheckpointError(f"{path}: field 'config' must be an object, got {type(record.get('config')).__name__}")
    return record


def checkpoint_record(path: str | os.PathLike) -> dict:
    """A checkpoint's JSON (fields checked; its ``sha256`` is what the tensor file must hash to on
    load), without reading the tensors."""
    record = _record(checkpoint_path(path))
    if not isinstance(record.get("sha256"), str):
        raise CheckpointError(f"{checkpoint_path(path)}: field 'sha256' must be a string")
    return record


def load_checkpoint(path: str | os.PathLike, device=None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint (its ``.json`` path, or a directory: the newest one in it) → (tensors, config)."""
    path = checkpoint_path(path)
    record = _record(path)
    weights = path.with_name(record["tensors"])
    if not weights.is_file():
        raise CheckpointError(f"{path}: its tensor file {weights.name} is missing")
    if file_sha256(weights) != record.get("sha256"):
        raise CheckpointError(f"{weights}: corrupt checkpoint (SHA-256 differs from the one recorded in {path.name})")
    try:
        tensors = load_file(str(weights), device=str(device) if device is not None else "cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({err})") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{weights}: tensor {name!r} holds {bad} non-finite value(s) (NaN or ±inf); "
                                  "a checkpoint with such weights is refused")
    return tensors, record["config"]


def _check_values(path, fields: str, values: int, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse a config that implies more parameter values than the checkpoint's own tensors hold."""
    held = sum(t.numel() for name, t in tensors.items() if not name.startswith(("optim.", "rng.", "backbone.")))
    if values > held:
        raise CheckpointError(f"{path}: {fields} imply at least {values:,} parameter values, but its tensor file "
                              f"holds {held:,}: the config does not describe these tensors")


def latest_checkpoint(directory: str | os.PathLike) -> pathlib.Path | None:
    """The newest ``step-<n>.json`` in ``directory`` (by step), else any single ``*.json``, else None."""
    directory = pathlib.Path(directory)
    steps = [(int(m.group(1)), p) for p in directory.glob("step-*.json")
             if (m := re.fullmatch(r"step-(\d+)\.json", p.name))]
    if steps:
        return max(steps)[1]
    others = sorted(directory.glob("*.json"))
    return others[-1] if others else None


def check_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Raise CheckpointError unless ``state`` has exactly ``module``'s keys and shapes."""
    own = module.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or extra or wrong:
        raise CheckpointError(f"{what} does not match the checkpoint: missing {missing[:5]}, unexpected "
                              f"{extra[:5]}, shape mismatches {wrong[:5]}")


def save_layer(layer, stem: str | os.PathLike, trained_with: dict | None = None) -> pathlib.Path:
    """Save a :class:`~pcdiff.codd.CoDDLayer`'s parameters and config (``trained_with``: JSON-able
    facts about what it was trained on, e.g. its backbone's SHA-256, checked by whoever loads it)."""
    config = {"kind": "codd-layer", "layer": layer.config()}
    if trained_with is not None:
        config["trained_with"] = trained_with
    return save_checkpoint(stem, dict(layer.state_dict()), config)


def load_layer_state(layer, path: str | os.PathLike, tensors=None, config=None) -> None:
    """Load a saved layer's parameters into ``layer`` after checking that they match it."""
    if tensors is None:
        tensors, config = load_checkpoint(path, device=layer.circuit.device)
    saved = config.get("layer", config) if isinstance(config, dict) else {}
    own = layer.config()
    for key in ("block_length", "vocab_size", "adapter"):
        if key in saved and saved[key] != own[key]:
            raise CheckpointError(f"checkpoint {path} has {key} = {saved[key]!r}, the layer has {own[key]!r}")
    state = {k.removeprefix("layer."): v for k, v in tensors.items()
             if not k.startswith(("optim.", "rng.", "backbone."))}
    check_state(layer, state, "the layer")
    layer.load_state_dict({k: v.to(layer.circuit.dtype) if v.is_floating_point() else v for k, v in state.items()})


def load_layer(path: str | os.PathLike, device=None):
    """Rebuild a layer saved by :func:`save_layer` (one built by ``CoDDLayer.from_structure``); its
    config is checked and sized before the layer is built."""
    path = checkpoint_path(path)
    tensors, config = load_checkpoint(path)
    if "layer" not in config:
        raise CheckpointError(f"{path}: not a CoDD layer checkpoint (no 'layer' config)")
    try:
        settings = check_config(config["layer"])
        values = check_size(settings, MAX_VALUES)
    except ValueError as err:
        raise CheckpointError(f"{path}: field 'layer': {err}") from None
    _check_values(path, "layer." + describe_size(settings).replace(", ", ", layer."), values, tensors)
    layer = CoDDLayer.from_config(config["layer"], device=device)
    load_layer_state(layer, path, tensors, config)
    return layer


#: The tiny models' checkpoint kinds: the bidirectional backbone and its causal twin (the AR model).
TINY_KINDS = {"tiny-backbone": TinyDiffusionTransformer, "tiny-causal": TinyCausalTransformer}


def save_backbone(backbone: TinyDiffusionTransformer, stem: str | os.PathLike) -> pathlib.Path:
    """Save a :class:`~pcdiff.backbones.TinyDiffusionTransformer` (or its causal twin)'s parameters and config
    (a uniform-noise model's config records ``noise: "uniform"``; a masked one's has no such field)."""
    kind = "tiny-causal" if isinstance(backbone, TinyCausalTransformer) else "tiny-backbone"
    return save_checkpoint(stem, dict(backbone.state_dict()), {"kind": kind, "model": backbone.config})


def load_backbone(path: str | os.PathLike, device=None) -> TinyDiffusionTransformer:
    """Rebuild a model saved by :func:`save_backbone` (eval mode, causal if it was saved causal); its
    config is checked and sized before the model is built."""
    path = checkpoint_path(path)
    tensors, config = load_checkpoint(path, device=device)
    if config.get("kind") not in TINY_KINDS:
        raise CheckpointError(f"{path}: not a tiny-backbone checkpoint (config.kind is {config.get('kind')!r})")
    model_class = TINY_KINDS[config["kind"]]
    model = config.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{path}: field 'model' must be an object, got {type(model).__name__}")
    try:
        values = TinyDiffusionTransformer.parameter_values(model)
    except ValueError as err:
        raise CheckpointError(f"{path}: field 'model': {err}") from None
    fields = "model." + ", model.".join(f"{k} = {v!r}" for k, v in model.items())
    if values > MAX_VALUES:
        raise CheckpointError(f"{path}: {fields} imply {values:,} parameter values, more than the limit of "
                              f"{MAX_VALUES:,} (pcdiff.codd.recipe.MAX_VALUES)")
    _check_values(path, fields, values, tensors)
    backbone = model_class(**model)
    check_state(backbone, tensors, f"{path}: the backbone")
    backbone.load_state_dict(tensors)
    return backbone.to(device or "cpu").eval()
