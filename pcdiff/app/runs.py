"""A *run directory*: everything `pcdiff train` produces and `sample` / `eval` read back.

    RUN/run.json                 data spec, settings, seeds, training summaries
    RUN/backbone.{json,safetensors}
    RUN/layer.{json,safetensors}
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

import torch

from ..backbones import TinyDiffusionTransformer
from ..codd import CoDDLayer
from ..data import ItemData, load_dataset
from ..files import atomic_write_text
from ..train.checkpoint import CheckpointError, check_state, load_checkpoint, load_layer, save_checkpoint, save_layer


@dataclass
class Run:
    data: ItemData
    backbone: TinyDiffusionTransformer
    layer: CoDDLayer
    settings: dict


#: Longest item accepted from a user's text file unless told otherwise (the block is one longer).
DEFAULT_FILE_MAX_LENGTH = 32


def data_spec(dataset: str | None, data_file: str | None, seed: int, max_length: int | None = None) -> dict:
    if data_file is not None:
        return {"source": str(pathlib.Path(data_file).resolve()), "seed": seed,
                "max_length": max_length or DEFAULT_FILE_MAX_LENGTH}
    spec = {"source": dataset or "words", "seed": seed}
    if max_length is not None:
        spec["max_length"] = max_length
    return spec


def load_data(spec: dict) -> ItemData:
    options = {"max_length": spec["max_length"]} if "max_length" in spec else {}
    return load_dataset(spec["source"], seed=spec["seed"], **options)


def save_run(run: Run, directory: pathlib.Path) -> None:
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_checkpoint(directory / "backbone", dict(run.backbone.state_dict()),
                    {"kind": "tiny-backbone", "model": run.backbone.config})
    save_layer(run.layer, directory / "layer")
    atomic_write_text(directory / "run.json", json.dumps(run.settings, indent=1))


def load_run(directory: pathlib.Path, device=None) -> Run:
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"run directory not found: {directory}")
    settings_path = directory / "run.json"
    if not settings_path.is_file():
        raise FileNotFoundError(f"{directory} is not a pcdiff run (no run.json); create one with `pcdiff train`")
    try:
        settings = json.loads(settings_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{settings_path}: corrupt run file ({err})") from None
    data = load_data(settings["data"])
    tensors, config = load_checkpoint(directory / "backbone.json", device=device)
    if config.get("kind") != "tiny-backbone":
        raise CheckpointError(f"{directory / 'backbone.json'}: not a tiny-backbone checkpoint")
    backbone = TinyDiffusionTransformer(**config["model"])
    check_state(backbone, tensors, "the backbone")
    backbone.load_state_dict(tensors)
    backbone.to(device or "cpu").eval()
    if backbone.vocab_size != data.vocab.size:
        raise CheckpointError(f"the run's backbone has vocabulary {backbone.vocab_size} but its data now has "
                              f"{data.vocab.size}: the data source changed since training")
    layer = load_layer(directory / "layer.json", device=device)
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


def torch_device(name: str | None) -> torch.device:
    device = torch.device(name or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device")
    return device
