"""The CoDD layer: a compiled circuit over one block, an adapter and a temperature, as an nn.Module.

It turns a backbone's output over a sequence into one :class:`CoDDBlockDistribution` per block of
``block_length`` positions, and gives the exact negative log-likelihood used for training.
"""
from __future__ import annotations

import networkx as nx
import numpy as np
import torch
from torch import nn

import structures

from ..arguments import check_int, check_number
from .adapters import Adapter, make_adapter
from .distribution import CoDDBlockDistribution
from .evidence import check_top_k
from .recipe import MAX_VALUES, STRUCTURES, check_config, check_size

__all__ = ["CoDDLayer", "STRUCTURES"]


class CoDDLayer(nn.Module):
    """Circuit + adapter + temperature.

    Args:
        circuit: a :class:`structures.Circuit` (compiled here) or a compiled circuit, over one block.
        adapter: a name registered in :data:`pcdiff.adapters.ADAPTERS` or an :class:`Adapter`.
        hidden_size: the backbone's hidden width D (needed by adapters that read hidden states).
        temperature: default T > 0 dividing the backbone's logits.
        mask_id: a masked backbone's mask id (banned at masked positions if it lies inside the
            vocabulary); None for a uniform-noise backbone. "Masked" means *to decide* whatever the
            noise: the layer reads those positions from ``masked``, never from the tokens there.
        adapter_kwargs: extra arguments for the adapter's constructor (e.g. ``{"rank": 4}``).
        top_k: None, or k in [1, V]: every distribution keeps each masked position's k most likely
            tokens and is exact on that support (leaf cost L·H·k instead of L·H·V; see
            :mod:`pcdiff.codd.evidence`); :meth:`nll` forces the targets into the candidates. Settable.
        dependence_only: every distribution divides the circuit's own one-position conditionals out
            of the product, so the circuit couples positions without repairing any one alone
            (:mod:`pcdiff.codd.dependence`); False = the paper's product.
    """

    def __init__(self, circuit, adapter: str | Adapter = "static", hidden_size: int | None = None,
                 temperature: float = 1.0, mask_id: int | None = None, dtype: torch.dtype = torch.float32,
                 device=None, adapter_kwargs: dict | None = None, top_k: int | None = None,
                 dependence_only: bool = False):
        super().__init__()
        if isinstance(circuit, structures.Circuit):
            circuit = structures.compile(circuit, device=device, dtype=dtype)
        if not isinstance(circuit, structures.CompiledCircuit):
            raise TypeError(f"circuit must be a structures.Circuit or CompiledCircuit, got {type(circuit).__name__}")
        check_number("temperature", temperature)
        check_int("hidden_size", hidden_size, 1, optional=True)
        check_int("mask_id", mask_id, 0, optional=True)
        if not isinstance(dependence_only, bool):
            raise TypeError(f"dependence_only must be a bool, got {type(dependence_only).__name__}")
        if adapter_kwargs is not None and not isinstance(adapter_kwargs, dict):
            raise TypeError(f"adapter_kwargs must be a dict, got {type(adapter_kwargs).__name__}")
        self.circuit = circuit
        if isinstance(adapter, str):
            self.adapter_name = adapter
            adapter = make_adapter(adapter, circuit, hidden_size, **(adapter_kwargs or {}))
        elif isinstance(adapter, Adapter):
            self.adapter_name = type(adapter).__name__
        else:
            raise TypeError(f"adapter must be a registered name or an Adapter, got {type(adapter).__name__}")
        self.adapter = adapter
        self.hidden_size = hidden_size
        self.temperature = float(temperature)
        self.mask_id = mask_id
        # how to rebuild this layer (set by from_structure; None for a hand-built circuit)
        self.recipe: dict | None = None
        self.adapter_kwargs = dict(adapter_kwargs or {})
        self.top_k = top_k
        self.dependence_only = dependence_only

    @property
    def top_k(self) -> int | None:
        return self._top_k

    @top_k.setter
    def top_k(self, value: int | None) -> None:
        self._top_k = check_top_k(value, self.vocab_size)

    @property
    def block_length(self) -> int:
        return self.circuit.num_vars

    @property
    def vocab_size(self) -> int:
        return self.circuit.vocab_size

    @property
    def needs_hidden(self) -> bool:
        return bool(getattr(self.adapter, "needs_hidden", True))

    # ------------------------------------------------------------------ distributions
    def distribution(self, logits: torch.Tensor, hidden: torch.Tensor | None, tokens: torch.Tensor,
                     masked: torch.Tensor, temperature: float | torch.Tensor | None = None,
                     validate_args: bool = True, top_k: int | None = None,
                     force_include: torch.Tensor | None = None) -> CoDDBlockDistribution:
        """p̂ over one block: logits [B, L, V], hidden [B, L, D] (None for static), tokens [B, L], masked [B, L].

        ``top_k`` (default: the layer's) and ``force_include`` as in :class:`CoDDBlockDistribution`.
        """
        if isinstance(logits, torch.Tensor) and logits.dim() == 3 and logits.shape[1] != self.block_length:
            raise ValueError(f"logits cover {logits.shape[1]} positions but the circuit's block length is "
                             f"{self.block_length} (split longer sequences with layer.blocks)")
        if self.needs_hidden and hidden is None:
            raise ValueError(f"the {self.adapter_name!r} adapter reads the backbone's hidden states; hidden is None")
        out = self.adapter(self.circuit, hidden)
        return CoDDBlockDistribution(
            self.circuit, logits, tokens, masked, self.temperature if temperature is None else temperature,
            log_params=out.log_params, node_potentials=out.node_potentials, validate_args=validate_args,
            backbone_weight=1.0 if out.backbone_weight is None else out.backbone_weight,
            mask_id=self.mask_id, top_k=self.top_k if top_k is None else top_k,
            force_include=force_include, dependence_only=self.dependence_only)

    def blocks(self, logits, hidden, tokens, masked, temperature=None,
               force_include: torch.Tensor | None = None) -> list[CoDDBlockDistribution]:
        """Split a sequence [B, N, ...] (N a multiple of the block length) into per-block distributions
        (``force_include`` [B, N], with top-k: see :meth:`distribution`)."""
        if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
            raise ValueError(f"logits must be a tensor [B, N, V], got {getattr(logits, 'shape', logits)!r}")
        n, length = logits.shape[1], self.block_length
        if n == 0 or n % length:
            raise ValueError(f"sequence length {n} is not a positive multiple of the circuit's block length {length}")
        named = (("tokens", tokens), ("masked", masked)) + ((("hidden", hidden),) if hidden is not None else ()) \
            + ((("force_include", force_include),) if force_include is not None else ())
        for name, t in named:
            if not isinstance(t, torch.Tensor) or t.shape[:2] != logits.shape[:2]:
                raise ValueError(f"{name} must start with logits' [B, N] = {tuple(logits.shape[:2])}, "
                                 f"got {tuple(getattr(t, 'shape', ()))}")
        return [self.distribution(logits[:, s:s + length], None if hidden is None else hidden[:, s:s + length],
                                  tokens[:, s:s + length], masked[:, s:s + length], temperature,
                                  force_include=None if force_include is None else force_include[:, s:s + length])
                for s in range(0, n, length)]

    def nll(self, logits, hidden, x0, masked, temperature=None) -> torch.Tensor:
        """[B] exact −log p̂(x0's masked tokens | the rest), summed over blocks (differentiable).

        With ``top_k`` it is −log p̂_k with x0 forced into the candidates (the training objective of
        the restricted layer: the ground truth is always in its support)."""
        force = x0 if self.top_k is not None else None
        return -sum(d.log_prob(x0[:, i * self.block_length:(i + 1) * self.block_length])
                    for i, d in enumerate(self.blocks(logits, hidden, x0, masked, temperature, force)))

    def forward(self, logits, hidden, x0, masked, temperature=None) -> torch.Tensor:
        """Same as :meth:`nll`."""
        return self.nll(logits, hidden, x0, masked, temperature)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_structure(cls, name: str, block_length: int, vocab_size: int, num_states: int = 64,
                       adapter: str = "static", backbone_hidden_size: int | None = None, seed: int = 0,
                       data=None, temperature: float = 1.0, mask_id: int | None = None,
                       dtype: torch.dtype = torch.float32, device=None, adapter_kwargs: dict | None = None,
                       tree_edges: list | None = None, top_k: int | None = None,
                       dependence_only: bool = False) -> "CoDDLayer":
        """A layer over a builder's circuit with ``num_states`` latent states.

        ``name``: "hmm" (homogeneous HMM), "chain" (hidden chain over spans of two positions) or
        "tree" (latent tree: the Chow-Liu tree of ``data`` [N, block_length] when given, i.e. an
        HCLT; else a balanced binary tree over the positions; or the explicit ``tree_edges``).
        """
        if name not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {name!r}")
        for arg, value in (("block_length", block_length), ("vocab_size", vocab_size), ("num_states", num_states)):
            check_int(arg, value, 1)
        check_int("seed", seed, 0, optional=True)
        if name == "hmm":
            circuit = structures.hmm(block_length, num_states, vocab_size, seed=seed)
        elif name == "chain":
            circuit = structures.hidden_chain(block_length, num_states, vocab_size, span=2, seed=seed)
        else:
            tree_edges = _tree_edges(block_length, vocab_size, data) if tree_edges is None else tree_edges
            graph = nx.Graph()
            graph.add_nodes_from(range(block_length))
            graph.add_edges_from(tuple(e) for e in tree_edges)
            circuit = structures.latent_tree(graph, num_states, vocab_size, seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0 if seed is None else seed)                     # the adapter's random init
            layer = cls(circuit, adapter=adapter, hidden_size=backbone_hidden_size, temperature=temperature,
                        mask_id=mask_id, dtype=dtype, device=device, adapter_kwargs=adapter_kwargs, top_k=top_k,
                        dependence_only=dependence_only)
        layer.recipe = {"structure": name, "block_length": int(block_length), "vocab_size": int(vocab_size),
                        "num_states": int(num_states), "seed": seed,
                        "tree_edges": [list(map(int, e)) for e in tree_edges] if name == "tree" else None}
        return layer

    def config(self) -> dict:
        """A JSON-able description (enough to rebuild the layer when it came from :meth:`from_structure`)."""
        return {"recipe": self.recipe, "adapter": self.adapter_name, "adapter_kwargs": self.adapter_kwargs,
                "hidden_size": self.hidden_size, "temperature": self.temperature, "mask_id": self.mask_id,
                "block_length": self.block_length, "vocab_size": self.vocab_size, "top_k": self.top_k,
                "dependence_only": self.dependence_only, "dtype": str(self.circuit.dtype).removeprefix("torch.")}

    @classmethod
    def from_config(cls, config: dict, device=None, max_values: int = MAX_VALUES) -> "CoDDLayer":
        """The layer :meth:`config` describes. ``config`` may come from a file: every field is checked
        first (errors name the field) and a recipe of more than ``max_values`` parameter values is
        refused before anything is built (see :mod:`pcdiff.codd.recipe`)."""
        settings = check_config(config)
        check_size(settings, max_values)
        return cls.from_structure(**{**settings, "dtype": getattr(torch, settings["dtype"])}, device=device)

    def extra_repr(self) -> str:
        return f"block_length={self.block_length}, vocab={self.vocab_size}, adapter={self.adapter_name!r}, " \
               f"temperature={self.temperature}" + (f", top_k={self.top_k}" if self.top_k is not None else "") \
            + (", dependence_only=True" if self.dependence_only else "")


def _tree_edges(length: int, vocab: int, data) -> list[tuple[int, int]]:
    if data is None:
        return [((i - 1) // 2, i) for i in range(1, length)]              # heap-shaped balanced binary tree
    data = np.asarray(data.cpu() if isinstance(data, torch.Tensor) else data)
    if data.ndim != 2 or data.shape[1] != length or data.shape[0] == 0:
        raise ValueError(f"data must be a non-empty [N, {length}] array of token ids, got shape {data.shape}")
    return sorted(tuple(sorted(e)) for e in structures.chow_liu_tree(data, vocab).edges)
