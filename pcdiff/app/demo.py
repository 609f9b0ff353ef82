"""The main job: train a tiny masked-diffusion backbone (or, with ``noise="uniform"``, a uniform-noise
one: ``pcdiff demo --noise uniform``), train a CoDD layer on it, evaluate, report.

`pcdiff demo` is `train_run` then `evaluate_run` then `write_report`; `pcdiff train`, `pcdiff eval`
and `pcdiff sample` run the pieces over a saved run directory.
"""
from __future__ import annotations

import json
import os
import pathlib
import platform
import time

import torch

from .. import __version__
from ..arguments import check_int, check_number
from ..backbones import TinyDiffusionTransformer
from ..backbones.protocol import NOISE_KINDS
from ..codd import ADAPTERS, STRUCTURES, CoDDLayer
from ..codd.recipe import MAX_VALUES, layer_values
from ..files import atomic_write_text
from ..train import heldout_loss, train_backbone, train_codd_layer
from .controls import ControlSettings, control_table
from .defaults import BACKBONE_STEPS, LAYER_DRAW, LAYER_LR, LAYER_MASKINGS, LAYER_STATES, LAYER_STEPS
from .evaluation import generation_table, headline, infill_table, sampling_overhead
from .judge import code_reference_rates
from .pretrained import checkpoint_for, pretrained_backbone, shipped_for
from .report import markdown_tables, save_plots
from .runs import Run, data_spec, load_data

#: A new tiny backbone's width and depth (the shipped words backbone's).
BACKBONE_SIZE = (128, 4)


def prepare_run(dataset: str | None = "words", data_file: str | None = None, max_length: int | None = None,
                seed: int = 0, num_states: int = LAYER_STATES, structure: str = "hmm", adapter: str = "static",
                device: str | torch.device = "cpu", backbone_dim: int | None = None,
                backbone_depth: int | None = None, noise: str = "mask", backbone: str | os.PathLike = "train",
                data_seed: int | None = None, dependence_only: bool = False) -> Run:
    """A run before training: its data, an initialized backbone and layer, its settings. Everything a
    user can get wrong (the data, the layer's size, the structure and adapter) fails here, in
    seconds, before any training. (Neither model draws from or changes the global RNG after the
    backbone's initialization, so building the layer first gives the same run.) ``noise``: the
    backbone's noise, "mask" (absorbing) or "uniform" (no mask id; the layer has none either).
    ``backbone``: "train" (a new one, trained by :func:`train_prepared`), "shipped" (the trained
    one in ``pcdiff/pretrained/`` made for this data split and noise, and this ``backbone_dim`` and
    ``backbone_depth`` where given, when there is one: :mod:`.pretrained`; else a new one), or the
    stem of a checkpoint `pcdiff train-backbone` wrote (a path; refused unless made for this data split
    and noise). A new backbone's width and depth default to :data:`BACKBONE_SIZE`. ``data_seed``
    (default ``seed``) draws the held-out split alone, so that runs of several seeds can share one split
    (and one trained backbone). ``dependence_only``: the layer's product keeps the circuit's coupling
    alone (:mod:`pcdiff.codd.dependence`)."""
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    if adapter not in ADAPTERS:
        raise ValueError(f"adapter must be one of {sorted(ADAPTERS)}, got {adapter!r}")
    if isinstance(num_states, bool) or not isinstance(num_states, int) or num_states < 1:
        raise ValueError(f"num_states must be a positive int, got {num_states!r}")
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
    if not isinstance(backbone, (str, os.PathLike)):
        raise ValueError(f"backbone must be 'train', 'shipped' or a checkpoint's stem, got {backbone!r}")
    check_int("data_seed", data_seed, 0, optional=True)
    check_int("backbone_dim", backbone_dim, 1, optional=True)
    check_int("backbone_depth", backbone_depth, 1, optional=True)
    torch.manual_seed(seed)
    spec = data_spec(dataset, data_file, seed if data_seed is None else data_seed, max_length)
    data = load_data(spec)
    found = None                              # the training record of the trained backbone to load, if any
    if backbone == "shipped":
        found = shipped_for(spec, data.block_length, noise, backbone_dim, backbone_depth)
    elif backbone != "train":
        found = checkpoint_for(backbone, spec, data.block_length, noise, backbone_dim, backbone_depth)
    dim, depth = (found["settings"]["dim"], found["settings"]["depth"]) if found is not None else \
        tuple(default if given is None else given for given, default in zip((backbone_dim, backbone_depth),
                                                                              BACKBONE_SIZE))
    check_layer_size(structure, data.block_length, data.vocab.size, num_states, adapter, dim)
    mask_id = data.vocab.mask_id if noise == "mask" else None
    backbone = TinyDiffusionTransformer(data.vocab.size, mask_id, data.block_length, dim=dim, depth=depth,
                                        noise=noise)
    # built even when a trained one replaces it: its draws from the seeded global RNG come before the
    # layer's, so the layer starts the same either way
    pretrained = pretrained_backbone(found) if found is not None else None
    if pretrained is not None:
        backbone = pretrained[0]
    backbone = backbone.to(device)
    layer = CoDDLayer.from_structure(structure, data.block_length, data.vocab.size, num_states=num_states,
                                     adapter=adapter,
                                     backbone_hidden_size=backbone.hidden_size, seed=seed,
                                     data=data.encode_train() if structure == "tree" else None,
                                     mask_id=mask_id, device=device, dependence_only=dependence_only)
    settings = {
        "pcdiff_version": __version__, "data": spec, "dataset": data.name, "block_length": data.block_length,
        "vocab_size": data.vocab.size, "train_items": len(data.train_items), "heldout_items": len(data.heldout_items),
        "seed": seed, "structure": structure, "num_states": num_states, "adapter": adapter,
    }
    if noise != "mask":                       # a masked run's settings stay as they always were
        settings["noise"] = noise
    if dependence_only:                       # likewise the paper's product
        settings["dependence_only"] = True
    if pretrained is not None:
        settings["backbone"] = pretrained[1]
    return Run(data=data, backbone=backbone, layer=layer, settings=settings)


def check_layer_size(structure: str, length: int, vocab: int, num_states: int, adapter: str, hidden: int) -> None:
    """Refuse a layer of more than MAX_VALUES parameter values before anything is built."""
    size = layer_values(structure, length, vocab, num_states, adapter, hidden)
    if size > MAX_VALUES:
        raise ValueError(f"num_states = {num_states} gives a {structure} layer over blocks of {length} "
                         f"positions and {vocab} tokens of at least {size:.3g} parameter values, more "
                         f"than the limit of {MAX_VALUES:,}")


def train_prepared(run: Run, budget: float = 1.0, backbone_steps: int | None = None, layer_steps: int | None = None,
                   progress: bool = True, layer_lr: float | None = None, em_init_epochs: int = 0,
                   layer_draw: str = LAYER_DRAW, cache_maskings: int = LAYER_MASKINGS) -> Run:
    """Train ``run``'s backbone (unless it was loaded trained), then its layer (backbone
    frozen, Adam at ``layer_lr``, default :data:`~.defaults.LAYER_LR`; its circuit first fit alone by
    ``em_init_epochs`` EM epochs; its maskings drawn by ``layer_draw``, the backbone's outputs cached for
    ``cache_maskings`` of them per item: :class:`~pcdiff.train.config.LayerTrainingConfig`'s
    ``elbo_draw`` and ``cache_maskings``), each for its step count: ``backbone_steps`` and
    ``layer_steps``, or the defaults scaled by ``budget``."""
    backbone_steps, layer_steps = training_steps(budget, backbone_steps, layer_steps)
    layer_lr = layer_learning_rate(layer_lr)
    data, backbone, layer, seed = run.data, run.backbone, run.layer, run.settings["seed"]
    loaded = run.settings.get("backbone", {})
    backbone_summary = loaded if "pretrained" in loaded else \
        train_backbone(backbone, data, steps=backbone_steps, seed=seed, progress=progress)
    backbone.eval().requires_grad_(False)
    # held out only at the end: the run keeps no learning curve, and evaluating never moves training
    layer_summary = train_codd_layer(layer, backbone, data, steps=layer_steps, lr=layer_lr, seed=seed,
                                     progress=progress, em_init_epochs=em_init_epochs, elbo_draw=layer_draw,
                                     cache_maskings=cache_maskings, eval_every=None)
    run.settings.update({
        "budget": budget,
        "backbone": {"parameters": backbone.num_parameters(), "config": backbone.config,
                     **_scalars(backbone_summary),
                     **({"plateau": loaded["plateau"]} if "pretrained" in loaded else {})},
        "layer": {"parameters": sum(p.numel() for p in layer.parameters()), "lr": layer_lr,
                  "em_init_epochs": em_init_epochs, "elbo_draw": layer_draw,
                  "cache_maskings": cache_maskings, **_scalars(layer_summary)},
    })
    return run


def train_run(dataset: str | None = "words", data_file: str | None = None, max_length: int | None = None,
              seed: int = 0, num_states: int = LAYER_STATES,
              structure: str = "hmm", adapter: str = "static", device: str | torch.device = "cpu",
              budget: float = 1.0, backbone_steps: int | None = None, layer_steps: int | None = None,
              backbone_dim: int | None = None, backbone_depth: int | None = None, progress: bool = True,
              noise: str = "mask",
              backbone: str | os.PathLike = "train", data_seed: int | None = None, layer_lr: float | None = None,
              em_init_epochs: int = 0, layer_draw: str = LAYER_DRAW, cache_maskings: int = LAYER_MASKINGS,
              dependence_only: bool = False) -> Run:
    """:func:`prepare_run` then :func:`train_prepared` (the step counts are checked first of all)."""
    training_steps(budget, backbone_steps, layer_steps)
    run = prepare_run(dataset, data_file, max_length, seed, num_states, structure, adapter, device,
                      backbone_dim, backbone_depth, noise, backbone, data_seed, dependence_only)
    return train_prepared(run, budget, backbone_steps, layer_steps, progress, layer_lr, em_init_epochs, layer_draw,
                          cache_maskings)


def layer_learning_rate(layer_lr: float | None) -> float:
    """``layer_lr`` checked, or :data:`~.defaults.LAYER_LR` when None."""
    return LAYER_LR if layer_lr is None else check_number("layer_lr", layer_lr)


def training_steps(budget: float, backbone_steps: int | None, layer_steps: int | None) -> tuple[int, int]:
    """(backbone steps, layer steps): the given counts, else the defaults scaled by ``budget``."""
    check_number("budget", budget)
    check_int("backbone_steps", backbone_steps, 1, optional=True)
    check_int("layer_steps", layer_steps, 1, optional=True)
    return (backbone_steps or max(1, round(BACKBONE_STEPS * budget)),
            layer_steps or max(1, round(LAYER_STEPS * budget)))


def _scalars(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) or v is None}


@torch.no_grad()
def evaluate_run(run: Run, seed: int = 0, num_samples: int = 1200, progress: bool = True,
                 controls: ControlSettings | None = None) -> dict:
    """Every measurement of the demo, as the JSON-able results dict; ``controls`` sizes the controls
    beside the likelihood figures (:mod:`.controls`; default :class:`ControlSettings` with ``seed``),
    and the headline perplexity table is read off them (in-distribution items)."""
    data, backbone, layer = run.data, run.backbone, run.layer
    check_int("num_samples", num_samples, 1)
    if not data.heldout_items:
        raise ValueError(f"the data ({data.name}) has no held-out items to evaluate on")
    backbone.eval()
    started, cpu_started = time.perf_counter(), time.process_time()
    control = control_table(backbone, layer, data, run.settings["num_states"], controls or ControlSettings(seed=seed),
                            progress=progress)
    top = headline(control)
    length = data.block_length
    steps_list = sorted({1, 2, 3, 4, length})
    results = {
        "perplexity": top["perplexity"],
        "gap_closed": top["gap_closed"],
        "headline": {"set": top["set"], "items": top["items"], "red_flags": top["red_flags"]},
        "generation": generation_table(backbone, layer, data, steps_list, num_samples=num_samples, seed=seed,
                                       progress=progress),
        "infill": infill_table(backbone, layer, data, seed=seed),
        "timing": sampling_overhead(backbone, layer, data, steps=min(4, length), seed=seed,
                                    num_samples=min(500, num_samples)),
        "backbone_heldout_loss": heldout_loss(backbone, data.encode_heldout()),
        "controls": control,
        **({"heldout_lines": code_reference_rates(data.heldout_items)} if data.name == "python" else {}),
        "settings": run.settings,
        "evaluation": {"seed": seed, "num_samples": num_samples,
                       "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
                       "machine": platform.platform(),
                       "torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    return results


def _layer_training(layer: dict) -> str:
    """", trained N steps, maskings drawn by D (M cached per item)" from what run.json records (older runs: less)."""
    steps = f", trained {layer['steps']:,} steps" if isinstance(layer.get("steps"), int) else ""
    draw = f", maskings drawn by {layer['elbo_draw']}" if "elbo_draw" in layer else ""
    cached = f" ({layer['cache_maskings']} cached per item)" if draw and "cache_maskings" in layer else ""
    return steps + draw + cached


def write_report(results: dict, out_dir: pathlib.Path) -> str:
    """results.json, results.md and the PNG plots in ``out_dir``; returns the markdown."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=1))
    settings = results["settings"]
    noise = " (uniform noise)" if settings.get("noise") == "uniform" else ""
    backbone = settings["backbone"]
    made = f"shipped `{backbone['shipped']}`" if "shipped" in backbone else f"checkpoint `{backbone.get('pretrained')}`"
    source = (f" ({made}, trained {backbone['steps']:,} steps"
              f"{' to a plateau' if backbone['plateau_reached'] else ', NOT to a plateau'})"
              if "pretrained" in backbone else f" (trained here, {backbone['steps']:,} steps)")
    header = (f"# pcdiff demo: {settings['dataset']}\n\n"
              f"Backbone{noise}{source} {backbone['parameters']:,} parameters, held-out diffusion loss "
              f"{results['backbone_heldout_loss']:.3f}; CoDD layer: {settings['structure']} with "
              f"{settings['num_states']} latent states, adapter `{settings['adapter']}`"
              f"{' (dependence only: its own conditionals divided out)' if settings.get('dependence_only') else ''}, "
              f"{settings['layer']['parameters']:,} parameters{_layer_training(settings['layer'])}.\n\n")
    text = header + markdown_tables(results)
    atomic_write_text(out_dir / "results.md", text)
    save_plots(results, out_dir)
    return text

