"""The models the parallel-decoding benchmark compares, trained once per task and kept in a work folder.

Per task: a tiny diffusion backbone, a learned CoDD layer (a static HMM trained on the CoDD
objective with the backbone frozen), the circuit designed for the task's rules (the all-different
frontier circuit of :mod:`structures.library.constraints`: exact, nothing to train) where there is
one, and a tiny autoregressive model for the AP-style product decoder. Every run is bounded by steps
and seeded, so a second run of the benchmark reuses the files, and a fresh one trains the same models.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

import torch

import structures
from pcdiff import CoDDLayer, TinyCausalTransformer, TinyDiffusionTransformer
from pcdiff.data import ItemData, load_dataset
from pcdiff.data.puzzles import TASKS, Task
from pcdiff.train import load_layer, save_layer, train_autoregressive, train_backbone, train_codd_layer
from pcdiff.train.checkpoint import load_backbone, save_backbone

__all__ = ["SIZES", "QUICK", "Models", "prepare", "designed_circuit", "adapter_layers"]

#: Training steps per task (full run): backbone, CoDD layer, autoregressive model; the HMM's states.
SIZES = {
    "permutations-4": dict(backbone=1500, layer=800, ar=800, num_states=64),
    "latin-4": dict(backbone=3000, layer=1000, ar=1500, num_states=256),
    "sudoku-4": dict(backbone=3000, layer=1000, ar=1500, num_states=256),
    "words": dict(backbone=1500, layer=1000, ar=1500, num_states=128),
}
#: The --quick sizes: seconds, a smoke test of the pipeline, not a measurement.
QUICK = dict(backbone=20, layer=5, ar=5, num_states=8)
#: Words: the 5,000 most frequent English words of at most 8 letters (blocks of 9).
WORDS = dict(num_words=5000, max_length=8)


@dataclass
class Models:
    name: str
    data: ItemData
    task: Task | None                              # None for words (judged by membership)
    backbone: TinyDiffusionTransformer
    layers: dict[str, CoDDLayer] = field(default_factory=dict)    # "HMM", "designed"
    ar: TinyCausalTransformer | None = None


def designed_circuit(task: Task, data: ItemData) -> structures.Circuit:
    """The circuit whose support is exactly the task's solutions (uniform over them), over the data's
    blocks: symbols are the vocabulary's first ids, the end symbol pads the block."""
    vocab, end = data.vocab.size, data.vocab.end_id
    if task.kind == "permutations":
        return structures.permutation(task.order, data.block_length, vocab=vocab, pad=end)
    boxes = (2, 2) if task.kind == "sudoku" else None
    return structures.latin_square(task.order, boxes=boxes, length=data.block_length, vocab=vocab, pad=end)


def prepare(name: str, work: pathlib.Path, quick: bool, seed: int, log=print) -> Models:
    """The task's models: loaded from ``work/<name>/`` when a previous run saved them, else trained."""
    sizes = QUICK if quick else SIZES[name]
    folder = pathlib.Path(work) / (f"{name}-quick" if quick else name)
    folder.mkdir(parents=True, exist_ok=True)
    data = load_dataset(name, seed=seed, **(WORDS if name == "words" else {}))
    task = TASKS.get(name)
    backbone = _cached(folder / "backbone", lambda: _train_backbone(data, sizes, seed, log), log)
    ar = _cached(folder / "autoregressive", lambda: _train_ar(data, sizes, seed, log), log)
    models = Models(name, data, task, backbone, ar=ar)
    models.layers["HMM"] = _hmm_layer(models, folder, sizes, "static", seed, log)
    if task is not None:
        models.layers["designed"] = CoDDLayer(designed_circuit(task, data), mask_id=data.vocab.mask_id)
    return models


def adapter_layers(models: Models, work: pathlib.Path, quick: bool, seed: int, log=print) -> dict[str, CoDDLayer]:
    """The learned HMM layer with each adapter (static, latent_evidence, low_rank), trained alike."""
    folder = pathlib.Path(work) / (f"{models.name}-quick" if quick else models.name)
    sizes = QUICK if quick else SIZES[models.name]
    return {adapter: _hmm_layer(models, folder, sizes, adapter, seed, log)
            for adapter in ("static", "latent_evidence", "low_rank")}


def _hmm_layer(models: Models, folder: pathlib.Path, sizes: dict, adapter: str, seed: int, log) -> CoDDLayer:
    """The learned CoDD layer: an HMM over the block trained on the CoDD objective, backbone frozen."""
    stem = folder / ("layer-hmm" if adapter == "static" else f"layer-hmm-{adapter}")
    if stem.with_name(stem.name + ".json").is_file():
        return load_layer(stem.with_name(stem.name + ".json"))
    data = models.data
    layer = CoDDLayer.from_structure("hmm", data.block_length, data.vocab.size, num_states=sizes["num_states"],
                                     adapter=adapter, backbone_hidden_size=models.backbone.hidden_size,
                                     mask_id=data.vocab.mask_id, seed=seed)
    log(f"  {models.name}: training the CoDD HMM layer, adapter {adapter} ({sizes['layer']} steps)")
    train_codd_layer(layer, models.backbone, data, steps=sizes["layer"], seed=seed, progress=False, eval_every=None)
    save_layer(layer, stem)
    return layer


def _cached(stem: pathlib.Path, train, log):
    if stem.with_name(stem.name + ".json").is_file():
        return load_backbone(stem.with_name(stem.name + ".json"))
    model = train()
    save_backbone(model, stem)
    return model


def _train_backbone(data: ItemData, sizes: dict, seed: int, log) -> TinyDiffusionTransformer:
    torch.manual_seed(seed)                                     # the initial weights
    model = TinyDiffusionTransformer(data.vocab.size, data.vocab.mask_id, data.block_length, dim=128, depth=4)
    log(f"  {data.name}: training the backbone ({sizes['backbone']} steps)")
    train_backbone(model, data, steps=sizes["backbone"], seed=seed, progress=False, eval_every=None)
    return model


def _train_ar(data: ItemData, sizes: dict, seed: int, log) -> TinyCausalTransformer:
    torch.manual_seed(seed)
    model = TinyCausalTransformer(data.vocab.size, data.vocab.mask_id, data.block_length, dim=64, depth=2)
    log(f"  {data.name}: training the autoregressive model ({sizes['ar']} steps)")
    train_autoregressive(model, data, steps=sizes["ar"], seed=seed, progress=False, eval_every=None)
    return model
