"""What the judged-generation benchmarks share (``fair_generation`` on words, ``code_lines`` on Python lines): a
tiny backbone and a CoDD HMM layer trained for fixed step counts, as :func:`pcdiff.app.demo.train_run` trains
them (or, ``cache_backbone=False``, from :func:`pcdiff.app.demo.prepare_run`'s start without its cache of
backbone outputs), kept in a work folder (a second run reuses them, a fresh run with the same seed trains the
same models); whole blocks generated from nothing; table cells; several seeds on one split, as mean ± sd."""
from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass

import torch

from pcdiff.app.demo import prepare_run, train_run
from pcdiff.app.defaults import LAYER_DRAW, LAYER_LR, LAYER_MASKINGS
from pcdiff.app import pretrained
from pcdiff.app.runs import data_spec, load_data
from pcdiff.data import ItemData
from pcdiff.decode import generate
from pcdiff.train import load_layer, save_layer, train_backbone, train_codd_layer
from pcdiff.train.checkpoint import load_backbone, save_backbone

__all__ = ["DATA_SEED", "Sizes", "Models", "trained", "trained_backbone", "prepared", "frozen_backbone",
           "generate_rows", "over_seeds", "standard_error", "cell", "spread_text", "header"]

#: Every seed of a judged benchmark trains on this one data split (the shipped words backbone's), so
#: that seeds vary the models' training and the draws, not the data.
DATA_SEED = 0


@dataclass(frozen=True)
class Sizes:
    """Training steps of the backbone and of the layer, the HMM's states, the backbone's width and depth,
    the layer's learning rate, adapter, ELBO draw and cached maskings per item."""
    backbone: int
    layer: int
    num_states: int
    layer_lr: float = LAYER_LR
    dim: int = 128
    depth: int = 4
    cache_backbone: bool = True         # False: the frozen backbone runs on each layer batch (see trained)
    shipped: str | None = None          # a name in pcdiff.app.pretrained.SHIPPED: that backbone, not one trained
    adapter: str = "static"
    layer_draw: str = LAYER_DRAW
    cache_maskings: int = LAYER_MASKINGS
    dependence_only: bool = False       # the layer's product keeps the circuit's coupling alone

    @property
    def backbone_text(self) -> str:
        """How the backbone was made, for a report."""
        made = f"shipped backbone (pcdiff/pretrained/{self.shipped}, made by pcdiff train-backbone)" if self.shipped \
            else f"backbone trained {self.backbone} steps"
        return f"{made} ({self.dim}×{self.depth})"

    @property
    def layer_text(self) -> str:
        """How the layer was trained, for a report."""
        adapter = "" if self.adapter == "static" else f", {self.adapter} adapter"
        adapter += " (dependence only: the circuit's conditionals divided out)" if self.dependence_only else ""
        cached = f", {self.cache_maskings} cached maskings per item" if self.cache_backbone else ""
        return (f"CoDD HMM layer with {self.num_states} states{adapter}, {self.layer} steps at learning rate "
                f"{self.layer_lr:g}, maskings drawn by {self.layer_draw}{cached}")

    def section(self, key: str, title: str, default: Sizes | None = None) -> tuple[str, str]:
        """A report's section key and title: the static layer's own; another adapter's, or (given the
        benchmark's ``default`` sizes) another backbone's or layer size's, apart."""
        keys, titles = [key], []
        if self.adapter != "static":
            keys.append(self.adapter)
            titles.append(f"{self.adapter} adapter")
        if self.dependence_only:
            keys.append("dependence")
            titles.append("dependence only")
        backbone = (self.shipped, self.backbone, self.dim, self.depth)
        if default is not None and backbone != (default.shipped, default.backbone, default.dim, default.depth):
            keys.append(self.shipped or f"b{self.backbone}-d{self.dim}x{self.depth}")
            titles.append(f"the shipped backbone {self.shipped}" if self.shipped else
                          f"backbone {self.dim}×{self.depth}, {self.backbone:,} steps")
        if default is not None and (self.num_states, self.layer) != (default.num_states, default.layer):
            keys.append(f"h{self.num_states}-l{self.layer}")
            titles.append(f"layer of {self.num_states} states, {self.layer:,} steps")
        return "-".join(keys), title + (": " + ", ".join(titles) if titles else "")

    @property
    def tag(self) -> str:
        # the shipped checkpoint's hash prefix: a newly shipped backbone never reuses models kept for the old
        backbone = f"shipped{pretrained.SHIPPED[self.shipped][:8]}" if self.shipped else self.backbone
        adapter = ("" if self.adapter == "static" else f"-{self.adapter}") + ("-dep" if self.dependence_only else "")
        cache = f"-m{self.cache_maskings}" if self.cache_backbone else "-nocache"
        return (f"b{backbone}-l{self.layer}-lr{self.layer_lr:g}-h{self.num_states}{adapter}-d{self.dim}x{self.depth}"
                f"-{self.layer_draw}{cache}")


@dataclass
class Models:
    data: ItemData
    backbone: torch.nn.Module
    layer: torch.nn.Module


def trained(dataset: str, work: pathlib.Path, sizes: Sizes, seed: int, max_length: int | None = None,
            log=print) -> Models:
    """The models for ``dataset`` on the split of :data:`DATA_SEED`, trained with ``seed``: loaded from
    ``work/<dataset>-<sizes>-d<data seed>-s<seed>/`` when saved there before, else trained for
    ``sizes``' fixed step counts and saved."""
    folder = pathlib.Path(work) / f"{dataset}-{sizes.tag}-d{DATA_SEED}-s{seed}"
    backbone_file, layer_file = folder / "backbone.json", folder / "layer.json"
    if backbone_file.is_file() and layer_file.is_file():
        data = load_data(data_spec(dataset, None, DATA_SEED, max_length))
        log(f"  {dataset}: loaded the models from {folder}")
        return Models(data, load_backbone(backbone_file).eval(), load_layer(layer_file))
    backbone = "loading the shipped backbone, training" if sizes.shipped else \
        f"training the backbone ({sizes.backbone} steps) and"
    log(f"  {dataset}: {backbone} the CoDD HMM layer ({sizes.layer} steps, {sizes.num_states} states)")
    if sizes.cache_backbone:
        run = train_run(dataset, max_length=max_length, seed=seed, num_states=sizes.num_states, progress=False,
                        backbone_steps=sizes.backbone, layer_steps=sizes.layer, backbone_dim=sizes.dim,
                        backbone_depth=sizes.depth, backbone="shipped" if sizes.shipped else "train",
                        data_seed=DATA_SEED, layer_lr=sizes.layer_lr, adapter=sizes.adapter,
                        layer_draw=sizes.layer_draw, cache_maskings=sizes.cache_maskings,
                        dependence_only=sizes.dependence_only)
        if sizes.shipped:
            _check_shipped(run, sizes)
    else:
        run = _train_uncached(dataset, work, max_length, seed, sizes, log)
    folder.mkdir(parents=True, exist_ok=True)
    save_backbone(run.backbone, folder / "backbone")
    save_layer(run.layer, folder / "layer")
    return Models(run.data, run.backbone.eval(), run.layer)


def trained_backbone(dataset: str, work: pathlib.Path, sizes: Sizes, seed: int, max_length: int | None = None,
                     log=print) -> torch.nn.Module:
    """The frozen backbone that :func:`trained` couples its layer to when ``sizes.cache_backbone`` is
    False: loaded from ``work/<dataset>-backbone-<steps, size>-d<data seed>-s<seed>/`` when saved there
    before, else trained for ``sizes.backbone`` steps from :func:`pcdiff.app.demo.prepare_run`'s start
    and saved. It depends on neither the layer's size nor its adapter, so every layer shares it."""
    name = f"{dataset}-backbone-b{sizes.backbone}-d{sizes.dim}x{sizes.depth}-d{DATA_SEED}-s{seed}"
    folder = pathlib.Path(work) / name
    if (folder / "backbone.json").is_file():
        return load_backbone(folder / "backbone.json").eval().requires_grad_(False)
    log(f"  {dataset}: training the backbone ({sizes.backbone} steps)")
    run = prepare_run(dataset, max_length=max_length, seed=seed, num_states=sizes.num_states, backbone_dim=sizes.dim,
                      backbone_depth=sizes.depth, data_seed=DATA_SEED)
    train_backbone(run.backbone, run.data, steps=sizes.backbone, seed=seed, progress=False, eval_every=None)
    folder.mkdir(parents=True, exist_ok=True)
    save_backbone(run.backbone, folder / "backbone")
    return run.backbone.eval().requires_grad_(False)


def _train_uncached(dataset: str, work: pathlib.Path, max_length: int | None, seed: int, sizes: Sizes, log) -> Models:
    """train_run's models from the same start, except that the frozen backbone runs on each layer batch
    instead of being cached first for several maskings of every training item (for 45,000 code lines 4
    maskings are 180,000 backbone passes, several times the layer steps' own work), and held-out
    records are kept only at the end."""
    run = prepared(dataset, sizes, seed, max_length)
    backbone = frozen_backbone(run, work, sizes, seed, max_length, log)
    train_codd_layer(run.layer, backbone, run.data, steps=sizes.layer, lr=sizes.layer_lr, seed=seed,
                     progress=False, eval_every=None, cache_backbone=False, elbo_draw=sizes.layer_draw)
    return Models(run.data, backbone, run.layer)


def prepared(dataset: str, sizes: Sizes, seed: int, max_length: int | None, num_states: int | None = None):
    """:func:`pcdiff.app.demo.prepare_run` for ``sizes`` on the split of :data:`DATA_SEED` (its layer
    with ``num_states``, default ``sizes.num_states``; the shipped backbone loaded when ``sizes.shipped``)."""
    return prepare_run(dataset, max_length=max_length, seed=seed, num_states=num_states or sizes.num_states,
                       backbone_dim=sizes.dim, backbone_depth=sizes.depth, data_seed=DATA_SEED, adapter=sizes.adapter,
                       backbone="shipped" if sizes.shipped else "train", dependence_only=sizes.dependence_only)


def frozen_backbone(run, work: pathlib.Path, sizes: Sizes, seed: int, max_length: int | None, log=print):
    """The frozen backbone a layer of ``run`` (from :func:`prepared`) couples to without a cache: the
    shipped one the run loaded (refused when none shipped for its split and size), else
    :func:`trained_backbone`'s."""
    if not sizes.shipped:
        return trained_backbone(run.data.name, work, sizes, seed, max_length, log)
    _check_shipped(run, sizes)
    return run.backbone.eval().requires_grad_(False)


def _check_shipped(run, sizes: Sizes) -> None:
    """Refuse a run that asked for the shipped backbone ``sizes.shipped`` and got another or none."""
    got = run.settings.get("backbone", {}).get("shipped")
    if got != sizes.shipped:
        raise ValueError(f"the shipped backbone {sizes.shipped} is not {run.data.name}'s at {sizes.dim}x{sizes.depth} "
                         f"(data seed {DATA_SEED}); the run got {got or 'none'}")


@torch.no_grad()
def generate_rows(models: Models, steps: int, samples: int, seed: int, remasking: str = "low_confidence",
                  codd: str = "off", pc_frac: float | None = None, batch: int = 500) -> torch.Tensor:
    """``[samples, L]``: whole blocks generated from nothing at ``steps`` per block, factorized
    (``codd="off"``) or with the CoDD layer (``"joint"``: its joint draw; ``"any_order"``: each
    step's positions drawn one at a time from its exact conditionals), gated by ``pc_frac`` when
    given; one seeded generator for all."""
    length = models.data.block_length
    generator = torch.Generator().manual_seed(seed)
    pieces = []
    for first in range(0, samples, batch):
        rows = min(batch, samples - first)
        pieces.append(generate(models.backbone, None, layer=None if codd == "off" else models.layer, gen_length=length,
                               block_length=length, steps=steps, remasking=remasking, batch_size=rows,
                               codd=codd, pc_frac=pc_frac, generator=generator))
    return torch.cat(pieces)


def over_seeds(runs: list[list[dict]], labels: tuple[str, ...]) -> list[dict]:
    """Rows of one seed each (``runs[seed][row]``, alike in their ``labels`` columns) → one row per
    cell: every other number as its mean over seeds, with ``<key>_sd``, their standard deviation, and
    ``seeds``, their count. A single seed's rows come back as they are (binomial ``_se`` kept)."""
    if len(runs) == 1:
        return runs[0]
    merged = []
    for cells in zip(*runs, strict=True):
        first = cells[0]
        if any(c[k] != first[k] for c in cells for k in labels):
            raise ValueError(f"the seeds' rows differ in {labels}: {[{k: c[k] for k in labels} for c in cells]}")
        row = {k: first[k] for k in labels} | {"seeds": len(cells)}
        for key, value in first.items():
            if key in labels or key.endswith("_se") or not isinstance(value, (int, float)):
                continue
            values = [float(c[key]) for c in cells]             # a nan (no well-formed sample) stays nan
            mean = sum(values) / len(values)
            row[key], row[f"{key}_sd"] = mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        merged.append(row)
    return merged


def standard_error(row: dict, key: str) -> float:
    """The standard error of ``row[key]``: binomial for one seed, sd / √seeds for a mean over seeds."""
    if "seeds" in row:
        return row[f"{key}_sd"] / math.sqrt(row["seeds"])
    return row[f"{key}_se"]


def cell(judged: dict, key: str) -> str:
    """``judged[key]`` for a table: a rate with ± its standard error (one seed) or ± its sd over seeds
    (a mean over seeds), a count as is (or its mean ± sd)."""
    value = judged[key]
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "–"
    digits = 1 if key.startswith("distinct") or key == "mean_length" else 3
    error = judged.get(f"{key}_se", judged.get(f"{key}_sd"))
    return f"{value:.{digits}f}" if error is None else f"{value:.{digits}f} ± {error:.{digits}f}"


def spread_text(seeds: list[int]) -> str:
    """How a report's ± reads, for one seed or several."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}; rates ± one binomial standard error"
    return (f"seeds {', '.join(map(str, seeds))} on one data split (data seed {DATA_SEED}); each figure the mean "
            "over seeds ± their standard deviation")


def header(columns: list[str]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
