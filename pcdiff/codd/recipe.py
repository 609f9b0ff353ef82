"""A layer's recipe (what :meth:`CoDDLayer.config` writes and :meth:`CoDDLayer.from_config` reads),
checked before anything is built.

A config read from a file (``layer.json``, a training checkpoint) is not trusted: every field's type
and range is checked, each error naming the field, and the size the recipe implies is computed from
its numbers alone (:func:`layer_values`), so that ``num_states: 1000000`` is refused instead of
allocating terabytes. The limits are :data:`MAX_VALUES` parameter values and :data:`MAX_NODES`
latent nodes (positions × states: an HMM's tables do not grow with the block, its circuit does);
readers of a file also compare the size with the tensors the file holds
(:func:`pcdiff.train.checkpoint.load_layer`).
"""
from __future__ import annotations

import math

from ..arguments import check_int, is_int
from .adapters import (ADAPTERS, BackboneWeightAdapter, CouplingStrengthAdapter, LatentEvidenceAdapter, LowRankAdapter,
                       StaticAdapter)
from .evidence import check_top_k

__all__ = ["STRUCTURES", "MAX_VALUES", "MAX_NODES", "layer_values", "describe_size", "check_size", "check_config"]

STRUCTURES = ("hmm", "chain", "tree")

#: The largest layer built from a config, in parameter values: 2^31 (8 GiB in float32).
MAX_VALUES = 2 ** 31

#: The largest circuit built from a config, in latent nodes (block_length × num_states): 2^24.
MAX_NODES = 2 ** 24

DTYPES = ("float32", "float64")

#: The keyword arguments of the built-in adapters, each with its check (custom adapters check their own).
ADAPTER_SETTINGS = {
    StaticAdapter: {},
    LatentEvidenceAdapter: {"per_position": lambda v: isinstance(v, bool)},
    LowRankAdapter: {"rank": lambda v: is_int(v) and v >= 1,
                     "tables": lambda v: v is None or (isinstance(v, list) and all(is_int(t) and t >= 0 for t in v))},
    CouplingStrengthAdapter: {},
    BackboneWeightAdapter: {"per_sample": lambda v: isinstance(v, bool)},
}


def layer_values(structure: str, block_length: int, vocab_size: int, num_states: int, adapter: str = "static",
                 hidden_size: int | None = None, adapter_kwargs: dict | None = None) -> int:
    """How many parameter values (at least) a layer of this recipe holds, from the numbers alone:
    exact for the built-in structures' circuits (one table per distinct, untied parameter set), a
    lower bound for the built-in adapters, 0 for other adapters."""
    h, length, vocab = num_states, block_length, vocab_size
    if structure == "hmm":                       # initial, one tied transition, one tied emission
        circuit = h + h * vocab + (h * h if length > 1 else 0)
    elif structure == "chain":                   # spans of two: one tied transition, an emission per position
        circuit = h + length * h * vocab + (h * h if length > 2 else 0)
    else:                                        # a latent tree: an edge table per non-root position
        circuit = h + length * h * vocab + (length - 1) * h * h
    width = hidden_size or 0
    if adapter == "latent_evidence":
        return circuit + width * h
    if adapter == "low_rank":                    # the root table's right factor alone is D × H × rank
        return circuit + width * h * (adapter_kwargs or {}).get("rank", 4)
    return circuit


def describe_size(settings: dict) -> str:
    """The fields that set a recipe's size, as ``field = value`` pairs (for error messages)."""
    names = [("name", "recipe.structure"), ("block_length", "recipe.block_length"),
             ("vocab_size", "recipe.vocab_size"), ("num_states", "recipe.num_states")]
    if settings.get("adapter") in ("latent_evidence", "low_rank"):
        names.append(("backbone_hidden_size", "hidden_size"))
    text = [f"{field} = {settings[key]!r}" for key, field in names]
    if settings.get("adapter") == "low_rank":
        text.append(f"adapter_kwargs.rank = {(settings.get('adapter_kwargs') or {}).get('rank', 4)}")
    return ", ".join(text)


def check_size(settings: dict, limit: int = MAX_VALUES) -> int:
    """The size of :func:`check_config`'s ``settings`` in parameter values; ValueError naming the fields
    above ``limit`` values or :data:`MAX_NODES` latent nodes."""
    nodes = settings["block_length"] * settings["num_states"]
    if nodes > MAX_NODES:
        raise ValueError(f"recipe.block_length = {settings['block_length']} × recipe.num_states = "
                         f"{settings['num_states']} is a circuit of {nodes:.3g} latent nodes, more than the "
                         f"limit of {MAX_NODES:,} (pcdiff.codd.recipe.MAX_NODES)")
    values = layer_values(settings["name"], settings["block_length"], settings["vocab_size"],
                          settings["num_states"], settings["adapter"], settings["backbone_hidden_size"],
                          settings["adapter_kwargs"])
    if values > limit:
        raise ValueError(f"{describe_size(settings)} imply a layer of at least {values:.3g} parameter values, "
                         f"more than the limit of {limit:,} (pcdiff.codd.recipe.MAX_VALUES)")
    return values


def _recipe(recipe) -> dict:
    if not isinstance(recipe, dict):
        raise ValueError(f"recipe must be an object, got {type(recipe).__name__}")
    structure = recipe.get("structure")
    if structure not in STRUCTURES:
        raise ValueError(f"recipe.structure must be one of {STRUCTURES}, got {structure!r}")
    states_key = "num_states" if "num_states" in recipe else "hidden"          # 0.1 wrote "hidden"
    for key, field in (("block_length", "block_length"), ("vocab_size", "vocab_size"), (states_key, states_key)):
        check_int(f"recipe.{field}", recipe.get(key), 1)
    check_int("recipe.seed", recipe.get("seed"), 0, optional=True)
    length, edges = recipe["block_length"], recipe.get("tree_edges")
    if structure == "tree" and edges is not None:
        pair = lambda e: isinstance(e, list) and len(e) == 2 and all(is_int(v) and 0 <= v < length for v in e)
        if not isinstance(edges, list) or len(edges) != length - 1 or not all(pair(e) for e in edges):
            raise ValueError(f"recipe.tree_edges must be {length - 1} pairs of positions in [0, {length}), "
                             f"got {str(edges)[:80]}")
    return dict(name=structure, block_length=length, vocab_size=recipe["vocab_size"],
                num_states=recipe[states_key], seed=recipe.get("seed"),
                tree_edges=edges if structure == "tree" else None)


def _adapter(config: dict) -> tuple[str, dict]:
    adapter, kwargs = config.get("adapter"), config.get("adapter_kwargs") or {}
    if adapter not in ADAPTERS:
        raise ValueError(f"adapter must be a registered adapter {sorted(ADAPTERS)}, got {adapter!r}")
    if not isinstance(kwargs, dict):
        raise ValueError(f"adapter_kwargs must be an object, got {type(kwargs).__name__}")
    if ADAPTERS[adapter] in ADAPTER_SETTINGS:
        known = ADAPTER_SETTINGS[ADAPTERS[adapter]]
        for key, value in kwargs.items():
            if key not in known:
                raise ValueError(f"adapter_kwargs.{key} is not a setting of the {adapter!r} adapter "
                                 f"(known: {sorted(known)})")
            if not known[key](value):
                raise ValueError(f"adapter_kwargs.{key} = {value!r} is not a valid value")
    return adapter, dict(kwargs)


def check_config(config) -> dict:
    """The keyword arguments of :meth:`CoDDLayer.from_structure` that ``config`` describes; ValueError
    naming the first field that is missing, of the wrong type or out of range."""
    if not isinstance(config, dict):
        raise ValueError(f"a layer config must be an object, got {type(config).__name__}")
    if config.get("recipe") is None:
        raise ValueError("this layer was built from a hand-made circuit (recipe is null); rebuild it yourself "
                         "and load its state")
    settings = _recipe(config["recipe"])
    for key in ("block_length", "vocab_size"):
        if key in config and config[key] != settings[key]:
            raise ValueError(f"{key} = {config[key]!r} disagrees with recipe.{key} = {settings[key]!r}")
    adapter, kwargs = _adapter(config)
    check_int("hidden_size", config.get("hidden_size"), 1, optional=True)
    check_int("mask_id", config.get("mask_id"), 0, optional=True)
    temperature = config.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    dtype = config.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    top_k = config.get("top_k")
    try:
        check_top_k(top_k, settings["vocab_size"])
    except ValueError:
        raise ValueError(f"top_k must be null or an int in [1, {settings['vocab_size']}] (recipe.vocab_size), "
                         f"got {top_k!r}") from None
    dependence_only = config.get("dependence_only", False)              # absent from older files: the paper's product
    if not isinstance(dependence_only, bool):
        raise ValueError(f"dependence_only must be true or false, got {dependence_only!r}")
    return dict(settings, adapter=adapter, adapter_kwargs=kwargs, backbone_hidden_size=config.get("hidden_size"),
                temperature=temperature, mask_id=config.get("mask_id"), dtype=dtype, top_k=top_k,
                dependence_only=dependence_only)
