"""Decoding the tables of ``.jpc`` entries into the arrays our node groups take.

* ``Input`` with a Categorical ``dist`` → probabilities ``[K, V]`` (``params`` flat, node-major);
* ``Product`` → node-level edges ``[K, num_children]``; ``edge_ids`` is block level
  ``[num_node_blocks, num_chs]`` (node ``k*B+i`` multiplies node ``edge_ids[k,j]*B+i`` of child
  j) or sparse ``[num_nodes, num_chs]`` (node level). The entry's own block count decides which,
  so a product whose block count differs from its first child's (which pyjuice itself misreads)
  loads right;
* ``Sum`` → dense ``[K, C]`` weights from the block edges ``[2, E]`` and ``params [E, B, cB]``,
  masked by ``zero_param_mask`` and normalized per sum node.

Every table is checked (dtype, shape, range, finiteness) before it is used.
"""
from __future__ import annotations

import numpy as np

from ..limits import MAX_VOCAB, brief
from .entries import FLOAT64_KEY, Entry, check_array, check_int, check_probabilities
from .safe_pickle import JpcError, PyjuiceDistribution, restricted_loads

#: Largest dense ``[K, C]`` sum weight table this reader will build.
MAX_DENSE_WEIGHTS = 1 << 27
#: Input parameter rows must sum to one within this (pyjuice does not renormalize them on load).
INPUT_ROW_TOLERANCE = 1e-3


class EntryTables:
    """The decoded tables of a list of entries; ``missing_params='uniform'`` stands in uniform
    parameters for entries saved before pyjuice initialized them."""

    def __init__(self, entries: list[Entry], missing_params: str):
        if missing_params not in ("error", "uniform"):
            raise ValueError("missing_params must be 'error' or 'uniform'")
        self.entries = entries
        self.missing_params = missing_params
        # ties compare these across entries, so each is decoded once
        self._dists: dict[int, tuple[int, int]] = {}
        # a circuit's variables are 0..n-1 with n at most the number of inputs: the bound on a scope
        self.num_inputs = sum(e.kind == "Input" for e in entries)
        self._sum_edges: dict[int, np.ndarray] = {}

    # ---- inputs -----------------------------------------------------------------------------
    def input_dist(self, e: Entry) -> tuple[int, int]:
        """(variable, number of categories) of an input entry."""
        if e.index not in self._dists:
            scope = e.info.get("scope")
            if not isinstance(scope, (list, tuple)) or len(scope) != 1:
                raise JpcError(f"{e.label}: scope must be a list of one variable (multivariate inputs "
                               "are not supported)")
            var = check_int(scope[0], f"{e.label}: scope variable")
            if var >= self.num_inputs:
                raise JpcError(f"{e.label}: scope variable {brief(var)} is out of range: the file has "
                               f"{self.num_inputs} input entries, so its variables are 0..{self.num_inputs - 1}")
            blob = e.info.get("dist")
            if not isinstance(blob, (bytes, bytearray)):
                raise JpcError(f"{e.label}: 'dist' must be the bytes of a pickled distribution")
            dist = restricted_loads(bytes(blob), f"{e.label} dist")
            if not isinstance(dist, PyjuiceDistribution):
                raise JpcError(f"{e.label}: 'dist' does not hold a pyjuice distribution")
            if dist.pyjuice_name != "Categorical":
                raise JpcError(f"{e.label}: unsupported distribution {dist.pyjuice_name} "
                               "(only Categorical inputs can be loaded)")
            state = dist.state if isinstance(dist.state, dict) else {}
            vocab = check_int(state.get("num_cats"), f"{e.label}: Categorical num_cats", 1, MAX_VOCAB)
            self._dists[e.index] = (var, vocab)
        return self._dists[e.index]

    def input_probs(self, e: Entry) -> np.ndarray:
        """Categorical probabilities ``[K, V]`` of an input entry."""
        var, vocab = self.input_dist(e)
        K = e.num_nodes
        params = self._params(e, lambda shape: shape in ((K * vocab,), (K, vocab)), f"[{K * vocab}]")
        if params is None:
            return np.full((K, vocab), 1.0 / vocab)
        probs = params.reshape(K, vocab)
        sums = probs.sum(1)
        bad = np.flatnonzero(np.abs(sums - 1.0) > INPUT_ROW_TOLERANCE)
        if bad.size:
            raise JpcError(f"{e.label}: categorical parameters of node {int(bad[0])} sum to {sums[bad[0]]:.6g}, "
                           "not 1 (pyjuice does not renormalize input parameters)")
        return probs / sums[:, None]

    def _params(self, e: Entry, shape_ok, expected: str) -> np.ndarray | None:
        if "params" not in e.info or e.info["params"] is None:
            if self.missing_params == "uniform":
                return None
            raise JpcError(f"{e.label}: has no parameters (saved before they were initialized?); "
                           "pass missing_params='uniform' to load it with uniform parameters")
        params = check_probabilities(e.info["params"], f"{e.label}: params")
        if not shape_ok(params.shape):
            raise JpcError(f"{e.label}: params have shape {params.shape}, expected {expected}")
        exact = e.info.get(FLOAT64_KEY)
        if isinstance(exact, np.ndarray) and exact.dtype == np.float64 and exact.shape == params.shape:
            # our own float64 copy, used only while it still agrees with the float32 params
            p32 = np.asarray(e.info["params"])
            if np.all(np.isfinite(exact)) and np.all(exact >= 0) and np.array_equal(exact.astype(p32.dtype), p32):
                params = exact.copy()
        return params

    # ---- products ---------------------------------------------------------------------------
    def product_edges(self, e: Entry) -> np.ndarray:
        """Node-level edges ``[K, num_children]``."""
        edge_ids = check_array(e.info.get("edge_ids"), f"{e.label}: edge_ids", "iu")
        nch = len(e.children)
        if edge_ids.ndim != 2 or edge_ids.shape[1] != nch:
            raise JpcError(f"{e.label}: edge_ids must be [rows, {nch}], got shape {edge_ids.shape}")
        children = [self.entries[c] for c in e.children]
        for ch in children:  # pyjuice's multiply gives a product its children's (common) block size
            if ch.block_size != e.block_size:
                raise JpcError(f"{e.label}: child entry {ch.index} has block size {ch.block_size}, "
                               f"the product {e.block_size} (they must be equal)")
        if edge_ids.shape[0] == e.num_blocks:  # block level
            self._check_edge_targets(e, edge_ids, children, "blocks")
            out = np.empty((e.num_nodes, nch), dtype=np.int64)
            for j in range(nch):
                col = edge_ids[:, j].astype(np.int64)
                out[:, j] = (col[:, None] * e.block_size + np.arange(e.block_size)[None, :]).reshape(-1)
            return out
        if edge_ids.shape[0] == e.num_nodes:  # sparse, node level
            self._check_edge_targets(e, edge_ids, children, "nodes")
            return edge_ids.astype(np.int64)
        raise JpcError(f"{e.label}: edge_ids has {edge_ids.shape[0]} rows; expected {e.num_blocks} (block level) "
                       f"or {e.num_nodes} (sparse)")

    @staticmethod
    def _check_edge_targets(e: Entry, edge_ids: np.ndarray, children: list[Entry], level: str) -> None:
        """Column j of a product's ``edge_ids`` must index child j's ``level`` (blocks or nodes)."""
        for j, ch in enumerate(children):
            size = ch.num_blocks if level == "blocks" else ch.num_nodes
            col = edge_ids[:, j]
            if col.min() < 0 or col.max() >= size:
                sparse = "" if level == "blocks" else "sparse "
                raise JpcError(f"{e.label}: {sparse}edge_ids[:, {j}] points outside child entry {ch.index} "
                               f"(0..{size - 1} {level})")

    # ---- sums -------------------------------------------------------------------------------
    def sum_shape(self, e: Entry) -> tuple[int, int]:
        """(child block size, total child blocks) of a sum entry."""
        children = [self.entries[c] for c in e.children]
        sizes = {ch.block_size for ch in children}
        if len(sizes) != 1:
            raise JpcError(f"{e.label}: children have different block sizes {sorted(sizes)}")
        return sizes.pop(), sum(ch.num_blocks for ch in children)

    def sum_edges(self, e: Entry) -> np.ndarray:
        """Block edges ``[2, E]`` of a sum entry: (sum block, child block) pairs."""
        if e.index in self._sum_edges:
            return self._sum_edges[e.index]
        edge_ids = check_array(e.info.get("edge_ids"), f"{e.label}: edge_ids", "iu")
        _, ch_blocks = self.sum_shape(e)
        if edge_ids.ndim != 2 or edge_ids.shape[0] != 2 or edge_ids.shape[1] < 1:
            raise JpcError(f"{e.label}: edge_ids must be [2, num_edges], got shape {edge_ids.shape}")
        if edge_ids.min() < 0 or edge_ids[0].max() >= e.num_blocks or edge_ids[1].max() >= ch_blocks:
            raise JpcError(f"{e.label}: edge_ids out of range (sum blocks 0..{e.num_blocks - 1}, "
                           f"child blocks 0..{ch_blocks - 1})")
        edge_ids = edge_ids.astype(np.int64)
        if np.unique(edge_ids[0]).size != e.num_blocks:
            raise JpcError(f"{e.label}: some sum node block has no edge")
        if np.unique(edge_ids, axis=1).shape[1] != edge_ids.shape[1]:  # (row * ch_blocks + col could overflow)
            raise JpcError(f"{e.label}: edge_ids lists the same (sum block, child block) pair twice")
        self._sum_edges[e.index] = edge_ids
        return edge_ids

    def sum_weights(self, e: Entry) -> np.ndarray:
        """Dense normalized weights ``[K, C]`` of a sum entry (C: nodes of all children)."""
        cbs, ch_blocks = self.sum_shape(e)
        edges = self.sum_edges(e)
        K, C, E = e.num_nodes, ch_blocks * cbs, edges.shape[1]
        if K * C > MAX_DENSE_WEIGHTS:
            raise JpcError(f"{e.label}: a dense [{K}, {C}] weight table is too large to load")
        bs = e.block_size
        params = self._params(e, lambda s: s == (E, bs, cbs) or (s == (E,) and bs == cbs == 1), f"[{E}, {bs}, {cbs}]")
        if params is None:
            params = np.ones((E, bs, cbs))
        params = params.reshape(E, bs, cbs)
        if "zero_param_mask" in e.info and e.info["zero_param_mask"] is not None:
            mask = check_array(e.info["zero_param_mask"], f"{e.label}: zero_param_mask", "b")
            if mask.shape != params.shape:
                raise JpcError(f"{e.label}: zero_param_mask has shape {mask.shape}, params {params.shape}")
            params = np.where(mask, 0.0, params)
        dense = np.zeros((e.num_blocks, ch_blocks, bs, cbs))
        dense[edges[0], edges[1]] = params
        weights = dense.transpose(0, 2, 1, 3).reshape(K, C)
        sums = weights.sum(1)
        if np.any(sums <= 0):
            raise JpcError(f"{e.label}: sum node {int(np.flatnonzero(sums <= 0)[0])} has all-zero weights")
        return weights / sums[:, None]
