"""The backbone shipped inside the package: trained once to a plateau by a documented command,
loaded by `pcdiff demo` unless asked to retrain.

A five-minute demo cannot train a backbone to convergence on 2 CPU cores, and a CoDD layer on an
unconverged backbone repairs its conditionals instead of closing its factorization gap (issue 13).
So, as real projects do, the backbone is trained once, deterministically from its seed:

    pcdiff train-backbone --out /tmp/words-count-32000
    pcdiff train-backbone --init /tmp/words-count-32000 --steps 4000 --lr 3e-4 --out pcdiff/pretrained/words-mask

(:func:`train_shipped_backbone`), and its checkpoint (safetensors + JSON, a few MB) ships in
``pcdiff/pretrained/`` with a record of how it was made (``<name>.training.json``: the data spec, the
settings, every evaluation, the plateau check). The SHA-256 of its tensors is pinned here, in code:
a checkpoint's own JSON could be edited together with its tensors, this constant cannot.

A shipped backbone is only used for the data split it was trained on: its data spec (source, seed,
block length) and noise must be the run's, and its size too where the run names one; else the demo
trains a backbone from scratch.
"""
from __future__ import annotations

import json
import pathlib

import torch

from ..arguments import check_int
from ..backbones import TinyDiffusionTransformer
from ..files import atomic_write_text
from ..train.checkpoint import CheckpointError, checkpoint_record, load_backbone, read_json, save_backbone
from ..train.config import BackboneTrainingConfig
from ..train.plateau import PLATEAU_TOLERANCE, train_to_plateau
from .runs import data_spec, load_data

__all__ = ["SHIPPED_DIR", "SHIPPED", "PRETRAIN_DEFAULTS", "train_shipped_backbone", "training_record", "checkpoint_for",
           "shipped_for", "pretrained_backbone"]

SHIPPED_DIR = pathlib.Path(__file__).resolve().parent.parent / "pretrained"

#: The shipped checkpoints: name -> the SHA-256 their tensors must hash to.
SHIPPED: dict[str, str] = {
    "words-mask": "372879536e87963d9a7975d8747789b35d289f05fd2c4b8410caf5d20ff9480e",
    # Python lines of at most 31 characters, 64×2 (benchmarks.code_lines' default; docs/results.md)
    "python-mask": "78cedfcf0620f455d987c2f27d0431c9771ec18800b652e029aa56f0a6a54b0d",
}

#: What `pcdiff train-backbone` trains by default (the first run of the shipped words backbone's recipe).
PRETRAIN_DEFAULTS = dict(dataset="words", seed=0, steps=32000, noise="mask", dim=128, depth=4, dropout=0.0,
                         batch_size=128, lr=3e-3, eval_every=1000, eval_items=500, init=None, max_length=None,
                         elbo_draw="count")


def train_shipped_backbone(out: str | pathlib.Path, progress: bool = True, **settings) -> dict:
    """Train a tiny backbone for ``steps`` steps (:func:`~pcdiff.train.plateau.train_to_plateau`) and
    save it as ``out.{json,safetensors}`` plus ``out.training.json``. Deterministic given the settings
    (:data:`PRETRAIN_DEFAULTS` fills the rest). ``init``: the stem of a checkpoint this one continues
    (written by this function, same size and noise); its steps count in the record's ``total_steps``,
    and the new steps run their own schedule. Returns the training record."""
    unknown = set(settings) - set(PRETRAIN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(PRETRAIN_DEFAULTS)}")
    s = {**PRETRAIN_DEFAULTS, **settings}
    for name in ("seed", "steps", "dim", "depth", "batch_size", "eval_every", "eval_items"):
        check_int(name, s[name], 0 if name == "seed" else 1)
    check_int("max_length", s["max_length"], 1, optional=True)
    spec = data_spec(s["dataset"], None, s["seed"], s["max_length"])
    data = load_data(spec)
    torch.manual_seed(s["seed"])
    mask_id = data.vocab.mask_id if s["noise"] == "mask" else None
    backbone = TinyDiffusionTransformer(data.vocab.size, mask_id, data.block_length, dim=s["dim"], depth=s["depth"],
                                        dropout=s["dropout"], noise=s["noise"])
    parent = None if s["init"] is None else _continue_from(backbone, pathlib.Path(s["init"]), s)
    config = BackboneTrainingConfig(steps=s["steps"], batch_size=s["batch_size"], lr=s["lr"], seed=s["seed"],
                                    eval_every=s["eval_every"], elbo_draw=s["elbo_draw"], progress=progress)
    summary = train_to_plateau(backbone, data, config, eval_items=s["eval_items"])
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = save_backbone(backbone, out)
    record = {"data": {**spec, "block_length": data.block_length}, "settings": s,
              "sha256": checkpoint_record(path)["sha256"], "plateau": summary["plateau"],
              "plateau_tolerance": PLATEAU_TOLERANCE,
              "plateau_reached": all(v < PLATEAU_TOLERANCE for v in summary["plateau"].values()),
              "total_steps": s["steps"] + (0 if parent is None else parent["total_steps"]),
              **({} if parent is None else {"init": parent}), "history": summary["history"]}
    atomic_write_text(out.with_name(out.name + ".training.json"), json.dumps(record, indent=1))
    return record


def _continue_from(backbone, stem: pathlib.Path, settings: dict) -> dict:
    """Load the checkpoint at ``stem`` into ``backbone`` (its data, size and noise must be this run's);
    return what the record keeps of it: its SHA-256 and total steps."""
    record = training_record(stem, "init")
    parent = record["settings"]
    differ = [k for k in ("dataset", "seed", "noise", "dim", "depth", "max_length") if parent.get(k) != settings[k]]
    if differ:
        raise ValueError(f"init {stem}: trained with {', '.join(f'{k} = {parent.get(k)!r}' for k in differ)}, "
                         f"this run has {', '.join(f'{k} = {settings[k]!r}' for k in differ)}")
    backbone.load_state_dict(load_backbone(stem).state_dict())
    return {"checkpoint": stem.name, "sha256": checkpoint_record(stem)["sha256"],
            "total_steps": record.get("total_steps", parent["steps"])}


def training_record(stem: str | pathlib.Path, what: str) -> dict:
    """The record ``pcdiff train-backbone`` wrote beside the checkpoint ``stem`` (``what``: the option
    or role that names it, for errors), its fields checked before any is read."""
    stem = pathlib.Path(stem)
    record_file = stem.with_name(stem.name + ".training.json")
    if not record_file.is_file():
        raise ValueError(f"{what} {stem}: no training record {record_file.name} beside it (only a checkpoint "
                         "written by `pcdiff train-backbone` has one)")
    record = read_json(record_file, "training record")
    settings = record.get("settings") if isinstance(record, dict) else None
    if not isinstance(settings, dict) or not isinstance(settings.get("steps"), int):
        raise CheckpointError(f"{record_file}: a training record needs a 'settings' object with integer 'steps'")
    for field, kind in (("data", dict), ("sha256", str), ("history", list), ("plateau", dict),
                        ("plateau_reached", bool)):
        if not isinstance(record.get(field), kind):
            raise CheckpointError(f"{record_file}: field {field!r} is missing or not a {kind.__name__}")
    if not record["history"] or not isinstance(record["history"][-1], dict):
        raise CheckpointError(f"{record_file}: field 'history' must end with an evaluation (an object)")
    return record


def _mismatch(record: dict, spec: dict, block_length: int, noise: str, dim: int | None, depth: int | None) -> list:
    """What differs between the backbone a record describes and what a run needs, as "key = value" texts."""
    wanted = {key: spec.get(key) for key in ("source", "seed", "max_length")} | {"block_length": block_length,
                                                                                "noise": noise}
    have = {**record["data"], "noise": record["settings"].get("noise")}
    for key, value in (("dim", dim), ("depth", depth)):
        if value is not None:
            wanted[key], have[key] = value, record["settings"].get(key)
    return [f"{key} = {have.get(key)!r} (the run's: {value!r})" for key, value in wanted.items()
            if have.get(key) != value]


def checkpoint_for(stem: str | pathlib.Path, spec: dict, block_length: int, noise: str, dim: int | None = None,
                   depth: int | None = None) -> dict:
    """The training record of the checkpoint at ``stem``, refused with a ValueError naming what differs
    unless it was trained on exactly this data spec and noise (and width and depth, where given)."""
    record = training_record(stem, "backbone checkpoint")
    differ = _mismatch(record, spec, block_length, noise, dim, depth)
    if differ:
        raise ValueError(f"backbone checkpoint {stem} does not fit this run: {'; '.join(differ)}")
    return {"stem": str(stem), **record}


def shipped_for(spec: dict, block_length: int, noise: str, dim: int | None = None,
                depth: int | None = None) -> dict | None:
    """The training record of the shipped checkpoint trained on exactly this data spec and noise (and
    this width and depth, where given), with its ``"stem"`` and ``"name"``; None when none matches."""
    for name in SHIPPED:
        record = training_record(SHIPPED_DIR / name, "shipped backbone")
        if not _mismatch(record, spec, block_length, noise, dim, depth):
            return {"stem": str(SHIPPED_DIR / name), "name": name, **record}
    return None


def pretrained_backbone(record: dict):
    """``(backbone, summary)`` of the checkpoint a record from :func:`checkpoint_for` or
    :func:`shipped_for` describes, its tensors checked against the record's SHA-256 (a shipped one's
    also against the pinned one). ``summary``, for run.json: where it came from (``pretrained``; and
    ``shipped``, its name, when shipped), SHA-256, steps, last evaluation and plateau check."""
    stem, s = pathlib.Path(record["stem"]), record["settings"]
    sha256 = checkpoint_record(stem)["sha256"]
    if sha256 != record["sha256"]:
        raise CheckpointError(f"{stem}: its tensors hash to {sha256}, its training record says {record['sha256']}")
    shipped = {"shipped": record["name"]} if "name" in record else {}
    if shipped and sha256 != SHIPPED[record["name"]]:
        raise CheckpointError(f"{stem}: the shipped backbone's record does not carry the pinned SHA-256 "
                              f"{SHIPPED[record['name']]}; the package's files were changed")
    last = {key: value for key, value in record["history"][-1].items() if key not in ("seconds", "steps")}
    # a continued checkpoint's history counts its own steps; "steps" is the total from scratch
    summary = {"pretrained": record.get("name", str(stem)), **shipped, "sha256": sha256,
               "steps": record.get("total_steps", s["steps"]), "dropout": s.get("dropout"), **last,
               "plateau": record["plateau"], "plateau_reached": record["plateau_reached"]}
    return load_backbone(stem), summary
