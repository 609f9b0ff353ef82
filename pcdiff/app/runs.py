"""A *run directory*: everything `pcdiff train` produces and `sample` / `eval` read back.

    RUN/run.json                 data spec, settings, seeds, training summaries, the checkpoints' SHA-256
    RUN/backbone.{json,safetensors}
    RUN/layer.{json,safetensors}

A run folder is written as one unit (:func:`pcdiff.files.atomic_write_folder`: filled as a temporary
sibling, renamed into place at the end) and never over an existing folder, so a run killed while
saving leaves no half-replaced folder behind. The layer's JSON records the SHA-256 of the backbone
it was trained with and run.json records both: :func:`load_run` refuses a folder whose files come
from different runs. Folders written before these records existed (pcdiff 0.2) load unchecked.
Every field read from run.json is checked, and errors name the file and the field.
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

from ..arguments import is_int
from ..backbones import TinyDiffusionTransformer
from ..codd import CoDDLayer
from ..data import ItemData, load_dataset
from ..data.sources import MAX_LENGTH, PYTHON_MAX_LENGTH
from ..files import atomic_write_folder, atomic_write_text
from ..train.checkpoint import (CheckpointError, checkpoint_record, load_backbone, load_layer, read_json,
                                save_backbone, save_layer)
from ..train.objective import check_compatible
from .options import MAX_SEED


@dataclass
class Run:
    data: ItemData
    backbone: TinyDiffusionTransformer
    layer: CoDDLayer
    settings: dict


#: The fields of run.json that `eval` and `sample` read, with their types (besides ``data``).
SETTINGS_FIELDS = {"dataset": str, "structure": str, "num_states": int, "adapter": str,
                   "backbone.parameters": int, "layer.parameters": int}


def data_spec(dataset: str | None, data_file: str | None, seed: int, max_length: int | None = None) -> dict:
    """Where a run's items come from, as run.json records it. Without ``max_length`` a file's spec
    holds none and the loader's default applies (its longest line, so 16-character items make blocks of
    17, not of a fixed default; loading the spec again from the same file gives the same block); Python
    lines record their default, which changed once (see :func:`load_data`)."""
    if data_file is not None:
        spec = {"source": str(pathlib.Path(data_file).resolve()), "seed": seed}
    else:
        spec = {"source": dataset or "words", "seed": seed}
    if max_length is None and spec["source"] == "python":
        max_length = PYTHON_MAX_LENGTH
    if max_length is not None:
        spec["max_length"] = max_length
    return spec


def load_data(spec: dict) -> ItemData:
    options = {"max_length": spec["max_length"]} if "max_length" in spec else {}
    if spec["source"] == "python" and not options:
        options["max_length"] = 32      # a run written by pcdiff 0.2, whose Python lines had this default
    return load_dataset(spec["source"], seed=spec["seed"], **options)


def save_run(run: Run, directory: pathlib.Path) -> pathlib.Path:
    """Write ``run`` as the new folder ``directory`` (which must not exist, or be empty), as one unit."""
    def write(folder: pathlib.Path) -> None:
        backbone_sha = checkpoint_record(save_backbone(run.backbone, folder / "backbone"))["sha256"]
        layer_sha = checkpoint_record(save_layer(run.layer, folder / "layer",
                                                 trained_with={"backbone_sha256": backbone_sha}))["sha256"]
        settings = {**run.settings, "checkpoints": {"backbone_sha256": backbone_sha, "layer_sha256": layer_sha}}
        atomic_write_text(folder / "run.json", json.dumps(settings, indent=1))
    return atomic_write_folder(directory, write)


def _field(settings: dict, dotted: str):
    value = settings
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def read_settings(path: pathlib.Path) -> dict:
    """run.json, every field that is read checked: a CheckpointError naming the file and the field."""
    settings = read_json(path, "run file")
    if not isinstance(settings, dict):
        raise CheckpointError(f"{path}: a run file holds a JSON object, this one a {type(settings).__name__}")
    if "hf" in settings:
        raise CheckpointError(f"{path}: a run over the Hugging Face model in {settings['hf'].get('path')!r} "
                              "(train --backbone hf:DIR): only `pcdiff sample` reads it")
    if "num_states" not in settings and "hidden" in settings:                 # 0.1 wrote "hidden"
        settings["num_states"] = settings["hidden"]
    data = settings.get("data")
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: field 'data' (where the run's items come from) is missing or not an object")
    checks = {"data.source": isinstance(data.get("source"), str) and data.get("source") != "",
              "data.seed": is_int(data.get("seed")) and 0 <= data["seed"] <= MAX_SEED,
              "data.max_length": "max_length" not in data
              or (is_int(data["max_length"]) and 1 <= data["max_length"] <= MAX_LENGTH)}
    checks.update({field: isinstance(_field(settings, field), kind) and not isinstance(_field(settings, field), bool)
                   for field, kind in SETTINGS_FIELDS.items()})
    for field, ok in checks.items():
        if not ok:
            raise CheckpointError(f"{path}: field '{field}' is missing or invalid (got {_field(settings, field)!r})")
    return settings


def check_pairing(directory: pathlib.Path, settings: dict) -> None:
    """Refuse a folder whose backbone, layer and run.json were not written together (compares the
    SHA-256 each records; JSON only, before any tensor is read)."""
    backbone = checkpoint_record(directory / "backbone.json")["sha256"]
    layer = checkpoint_record(directory / "layer.json")
    recorded = settings.get("checkpoints")
    trained_with = layer["config"].get("trained_with")
    if recorded is None and trained_with is None:
        return                                       # written by pcdiff 0.2: nothing recorded to compare
    recorded, trained_with = recorded if isinstance(recorded, dict) else {}, (
        trained_with if isinstance(trained_with, dict) else {})
    for claim, value, actual, file in (
            ("layer.json's trained_with.backbone_sha256", trained_with.get("backbone_sha256"), backbone,
             "backbone.safetensors"),
            ("run.json's checkpoints.backbone_sha256", recorded.get("backbone_sha256"), backbone,
             "backbone.safetensors"),
            ("run.json's checkpoints.layer_sha256", recorded.get("layer_sha256"), layer["sha256"],
             "layer.safetensors")):
        if value != actual:
            raise CheckpointError(f"{directory}: {claim} is {str(value)[:16]!r} but {file} is {actual[:16]}…: the "
                                  "folder holds files of different runs (copied, or overwritten half-way); "
                                  "train the run again")


def load_run(directory: pathlib.Path, device=None) -> Run:
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"run directory not found: {directory}")
    settings_path = directory / "run.json"
    if not settings_path.is_file():
        raise FileNotFoundError(f"{directory} is not a pcdiff run (no run.json); create one with `pcdiff train`")
    settings = read_settings(settings_path)
    check_pairing(directory, settings)
    try:
        data = load_data(settings["data"])
    except (ValueError, FileNotFoundError) as err:
        raise CheckpointError(f"{settings_path}: field 'data': {err}") from None
    backbone = load_backbone(directory / "backbone.json", device=device)
    if (backbone.vocab_size, backbone.block_length) != (data.vocab.size, data.block_length):
        raise CheckpointError(f"the run's backbone has vocabulary {backbone.vocab_size} and blocks of "
                              f"{backbone.block_length}, but its data now has {data.vocab.size} and "
                              f"{data.block_length}: the data source changed since training")
    layer = load_layer(directory / "layer.json", device=device)
    try:
        check_compatible(layer, backbone, data.block_length)
    except ValueError as err:
        raise CheckpointError(f"{directory}: layer.json does not fit backbone.json: {err}") from None
    recipe = layer.recipe or {}
    for field in ("structure", "num_states", "adapter"):
        saved = layer.adapter_name if field == "adapter" else recipe.get(field)
        if settings[field] != saved:
            raise CheckpointError(f"{settings_path}: field '{field}' is {settings[field]!r} but layer.json's "
                                  f"layer has {saved!r}")
    return Run(data=data, backbone=backbone, layer=layer, settings=settings)


def fresh_run_directory(base: str | None) -> pathlib.Path:
    """``base`` if given, else a new ``pcdiff-runs/run-N`` folder that does not exist yet."""
    if base is not None:
        return pathlib.Path(base)
    root = pathlib.Path("pcdiff-runs")
    n = 1
    while (root / f"run-{n}").exists():
        n += 1
    return root / f"run-{n}"
