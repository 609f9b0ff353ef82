"""Reading pyjuice ``.jpc`` files into :class:`~structures.Circuit` objects (pyjuice not needed).

A ``.jpc`` is a pickled list of dicts, one per pyjuice node vector, children first and the root
last. Each vector holds ``num_node_blocks * block_size`` nodes; this module turns every entry
reachable from the root into one of our node groups:

* ``Input`` with a Categorical ``dist`` → :class:`Categorical` (``params`` flat, node-major);
* ``Product`` → :class:`Product`; ``edge_ids`` is block level ``[num_node_blocks, num_chs]``
  (node ``k*B+i`` multiplies node ``edge_ids[k,j]*B+i`` of child j) or sparse
  ``[num_nodes, num_chs]`` (node level). The entry's own block count decides which, so a product
  whose block count differs from its first child's (which pyjuice itself misreads) loads right;
* ``Sum`` → :class:`Sum` with dense ``[K, C]`` weights from the block edges ``[2, E]`` and
  ``params [E, B, cB]``, masked by ``zero_param_mask`` and normalized per sum node;
* ``source_node`` ties (which may point forward) → ``tie_to`` of the first loaded group of the
  tie class, with the parameters of pyjuice's source.

With ``simplify=True`` (the default) pass-through vectors are replaced by their child, which
leaves every node's value unchanged: one-child products with identity edges (pyjuice wraps
every input given to a sum in one; ``save_jpc`` puts one between a Sum and a Sum child) and
untied one-child sums whose weights are the identity (``juice.compile`` inserts identity-sum +
one-child-product pairs, which ``juice.save`` then writes; ``save_jpc`` puts one between a
Product and a Product child). ``simplify=False`` keeps every entry as a group.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..circuit import Circuit
from ..nodes import Categorical, NodeGroup, Product, StructureError, Sum
from .safe_pickle import JpcError, PyjuiceDistribution, _ArrayState, restricted_loads

#: Files larger than this are refused unless ``max_bytes=`` says otherwise.
DEFAULT_MAX_BYTES = 1 << 31
#: Most entries (node vectors) in one file, and most nodes in one vector.
MAX_ENTRIES = 1 << 20
MAX_NODES_PER_ENTRY = 1 << 24
#: Largest dense ``[K, C]`` sum weight table this reader will build, and most table entries
#: (input probabilities, product edges, dense sum weights) in one loaded circuit.
MAX_DENSE_WEIGHTS = 1 << 27
MAX_TOTAL_ELEMENTS = 1 << 28
#: Input parameter rows must sum to one within this (pyjuice does not renormalize them on load).
INPUT_ROW_TOLERANCE = 1e-3
#: Extra key ``save_jpc`` writes next to the float32 ``params``; pyjuice ignores it.
FLOAT64_KEY = "params_float64"

_TYPES = ("Input", "Product", "Sum")


def _check_path(path) -> str:
    path = os.fspath(path)
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if not path.endswith(".jpc"):
        raise JpcError(f"{path!r}: a pyjuice circuit file must have the .jpc suffix")
    return path


def read_jpc_entries(path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[dict]:
    """The raw list of node dicts of a ``.jpc`` file, unpickled safely (arrays are numpy arrays,
    ``dist`` is still the nested pickle's bytes)."""
    path = _check_path(path)
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise JpcError(f"{path!r}: file has {size} bytes, more than max_bytes={max_bytes}")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise JpcError(f"{path!r}: cannot read ({err})") from err
    if len(data) > max_bytes:
        raise JpcError(f"{path!r}: file is larger than max_bytes={max_bytes}")
    if not data:
        raise JpcError(f"{path!r}: empty file")
    obj = restricted_loads(data, repr(path))
    if not isinstance(obj, list):
        raise JpcError(f"{path!r}: a .jpc holds a list of node dicts, found {type(obj).__name__}")
    if not obj:
        raise JpcError(f"{path!r}: the node list is empty")
    if len(obj) > MAX_ENTRIES:
        raise JpcError(f"{path!r}: {len(obj)} entries is more than this reader allows ({MAX_ENTRIES})")
    out = []
    for i, entry in enumerate(obj):
        if not isinstance(entry, dict):
            raise JpcError(f"{path!r}: entry {i} is a {type(entry).__name__}, not a dict")
        clean = {}
        for key, value in entry.items():
            if not isinstance(key, str):
                raise JpcError(f"{path!r}: entry {i} has a non-string key")
            clean[key] = value.array if isinstance(value, _ArrayState) else value
        out.append(clean)
    return out


def _int(value, what: str, low: int = 0) -> int:
    if type(value) is not int or value < low:
        raise JpcError(f"{what} must be an int >= {low}, got {type(value).__name__}"
                       + (f" {value}" if isinstance(value, (int, float)) else ""))
    return value


def _array(value, what: str, kinds: str) -> np.ndarray:
    if isinstance(value, _ArrayState):
        value = value.array
    if not isinstance(value, np.ndarray):
        raise JpcError(f"{what} must be a numpy array, got {type(value).__name__}")
    if value.dtype.kind not in kinds:
        raise JpcError(f"{what} has dtype {value.dtype}; expected kind {kinds!r}")
    return value


def _probabilities(value, what: str) -> np.ndarray:
    arr = _array(value, what, "f").astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise JpcError(f"{what} contains NaN or infinite values")
    if np.any(arr < 0):
        raise JpcError(f"{what} contains negative values")
    return arr


@dataclass
class _Entry:
    index: int
    kind: str
    num_blocks: int
    block_size: int
    children: tuple[int, ...]
    info: dict
    source: int | None

    @property
    def num_nodes(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def label(self) -> str:
        return f"entry {self.index} ({self.kind})"


def _parse(raw: list[dict]) -> list[_Entry]:
    entries = []
    for i, info in enumerate(raw):
        kind = info.get("type")
        if kind not in _TYPES:
            raise JpcError(f"entry {i}: 'type' must be one of {_TYPES}, got {kind!r:.40}")
        where = f"entry {i} ({kind})"
        if "num_node_blocks" in info:
            nb, bs = info["num_node_blocks"], info.get("block_size")
        elif "num_node_groups" in info:  # legacy names
            nb, bs = info["num_node_groups"], info.get("group_size")
        elif "num_nodes" in info:  # legacy: no blocks
            nb, bs = info["num_nodes"], 1
        else:
            raise JpcError(f"{where}: missing 'num_node_blocks'")
        nb = _int(nb, f"{where}: num_node_blocks", 1)
        bs = _int(bs, f"{where}: block_size", 1)
        if bs & (bs - 1):
            raise JpcError(f"{where}: block_size {bs} is not a power of two")
        if nb * bs > MAX_NODES_PER_ENTRY:
            raise JpcError(f"{where}: {nb} x {bs} nodes is more than this reader allows ({MAX_NODES_PER_ENTRY})")
        chs = info.get("chs", ())
        if not isinstance(chs, (tuple, list)):
            raise JpcError(f"{where}: 'chs' must be a tuple of entry indices")
        for c in chs:
            if type(c) is not int or not 0 <= c < i:
                raise JpcError(f"{where}: child index {c if type(c) is int else type(c).__name__} out of range "
                               f"(children must be earlier entries, 0..{i - 1})")
        if kind == "Input" and chs:
            raise JpcError(f"{where}: an input has no children")
        if kind != "Input" and not chs:
            raise JpcError(f"{where}: has no children")
        if info.get("external_params") is not None:
            raise JpcError(f"{where}: sum nodes with external_params are not supported")
        source = info.get("source_node")
        if source is not None:
            if type(source) is not int or not 0 <= source < len(raw) or source == i:
                raise JpcError(f"{where}: source_node {source!r:.20} is not another entry's index")
        entries.append(_Entry(i, kind, nb, bs, tuple(chs), info, source))
    return entries


class _Loader:
    def __init__(self, entries: list[_Entry], simplify: bool, missing_params: str):
        if missing_params not in ("error", "uniform"):
            raise ValueError("missing_params must be 'error' or 'uniform'")
        self.entries = entries
        self.simplify = simplify
        self.missing_params = missing_params
        self._cache: dict[tuple[str, int], object] = {}
        self._root_of: dict[int, int] = {}
        self.sources = [self._resolve_source(e) for e in entries]
        self.class_size: dict[int, int] = {}
        for e in entries:
            if e.kind != "Product":
                self.class_size[self.sources[e.index]] = self.class_size.get(self.sources[e.index], 0) + 1

    # ---- ties -------------------------------------------------------------------------------
    def _resolve_source(self, e: _Entry) -> int:
        if e.source is None or e.kind == "Product":  # products have no parameters to share
            return e.index
        path, on_path, cur = [], set(), e
        while cur.source is not None and cur.index not in self._root_of:
            if cur.index in on_path:
                raise JpcError(f"{e.label}: source_node references form a cycle")
            path.append(cur.index)
            on_path.add(cur.index)
            nxt = self.entries[cur.source]
            if nxt.kind != e.kind:
                raise JpcError(f"{cur.label}: tied to entry {nxt.index}, which is a {nxt.kind}")
            cur = nxt
        src = self.entries[self._root_of.get(cur.index, cur.index)]
        for i in path:  # memoized, so long chains cost linear time
            self._root_of[i] = src.index
        if (src.num_blocks, src.block_size) != (e.num_blocks, e.block_size):
            raise JpcError(f"{e.label}: tied to entry {src.index} of a different size "
                           f"({src.num_blocks}x{src.block_size} vs {e.num_blocks}x{e.block_size})")
        if e.kind == "Input":
            if self.input_dist(src)[1] != self.input_dist(e)[1]:
                raise JpcError(f"{e.label}: tied to entry {src.index} with a different number of categories")
        else:
            if self.sum_shape(src) != self.sum_shape(e):
                raise JpcError(f"{e.label}: tied to entry {src.index} whose children differ in size")
            if not np.array_equal(self.sum_edges(src), self.sum_edges(e)):
                raise JpcError(f"{e.label}: tied to entry {src.index} but its edge_ids differ from the source's")
        return src.index

    # ---- inputs -----------------------------------------------------------------------------
    def input_dist(self, e: _Entry) -> tuple[int, int]:
        """(variable, number of categories) of an input entry."""
        key = ("dist", e.index)
        if key not in self._cache:
            scope = e.info.get("scope")
            if not isinstance(scope, (list, tuple)) or len(scope) != 1:
                raise JpcError(f"{e.label}: scope must be a list of one variable (multivariate inputs "
                               "are not supported)")
            var = _int(scope[0], f"{e.label}: scope variable")
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
            vocab = _int(state.get("num_cats"), f"{e.label}: Categorical num_cats", 1)
            self._cache[key] = (var, vocab)
        return self._cache[key]

    def input_probs(self, e: _Entry) -> np.ndarray:
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

    def _params(self, e: _Entry, shape_ok, expected: str) -> np.ndarray | None:
        if "params" not in e.info or e.info["params"] is None:
            if self.missing_params == "uniform":
                return None
            raise JpcError(f"{e.label}: has no parameters (saved before they were initialized?); "
                           "pass missing_params='uniform' to load it with uniform parameters")
        params = _probabilities(e.info["params"], f"{e.label}: params")
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
    def product_edges(self, e: _Entry) -> np.ndarray:
        """Node-level edges ``[K, num_children]``."""
        edge_ids = _array(e.info.get("edge_ids"), f"{e.label}: edge_ids", "iu")
        nch = len(e.children)
        if edge_ids.ndim != 2 or edge_ids.shape[1] != nch:
            raise JpcError(f"{e.label}: edge_ids must be [rows, {nch}], got shape {edge_ids.shape}")
        children = [self.entries[c] for c in e.children]
        for ch in children:  # pyjuice's multiply gives a product its children's (common) block size
            if ch.block_size != e.block_size:
                raise JpcError(f"{e.label}: child entry {ch.index} has block size {ch.block_size}, "
                               f"the product {e.block_size} (they must be equal)")
        if edge_ids.shape[0] == e.num_blocks:  # block level
            out = np.empty((e.num_nodes, nch), dtype=np.int64)
            for j, ch in enumerate(children):
                col = edge_ids[:, j]
                if col.min() < 0 or col.max() >= ch.num_blocks:
                    raise JpcError(f"{e.label}: edge_ids[:, {j}] points outside child entry {ch.index} "
                                   f"(0..{ch.num_blocks - 1} blocks)")
                col = col.astype(np.int64)
                out[:, j] = (col[:, None] * e.block_size + np.arange(e.block_size)[None, :]).reshape(-1)
            return out
        if edge_ids.shape[0] == e.num_nodes:  # sparse, node level
            for j, ch in enumerate(children):
                col = edge_ids[:, j]
                if col.min() < 0 or col.max() >= ch.num_nodes:
                    raise JpcError(f"{e.label}: sparse edge_ids[:, {j}] points outside child entry {ch.index} "
                                   f"(0..{ch.num_nodes - 1} nodes)")
            return edge_ids.astype(np.int64)
        raise JpcError(f"{e.label}: edge_ids has {edge_ids.shape[0]} rows; expected {e.num_blocks} (block level) "
                       f"or {e.num_nodes} (sparse)")

    # ---- sums -------------------------------------------------------------------------------
    def sum_shape(self, e: _Entry) -> tuple[int, int]:
        """(child block size, total child blocks) of a sum entry."""
        children = [self.entries[c] for c in e.children]
        sizes = {ch.block_size for ch in children}
        if len(sizes) != 1:
            raise JpcError(f"{e.label}: children have different block sizes {sorted(sizes)}")
        return sizes.pop(), sum(ch.num_blocks for ch in children)

    def sum_edges(self, e: _Entry) -> np.ndarray:
        key = ("edges", e.index)
        if key in self._cache:
            return self._cache[key]
        edge_ids = _array(e.info.get("edge_ids"), f"{e.label}: edge_ids", "iu")
        _, ch_blocks = self.sum_shape(e)
        if edge_ids.ndim != 2 or edge_ids.shape[0] != 2 or edge_ids.shape[1] < 1:
            raise JpcError(f"{e.label}: edge_ids must be [2, num_edges], got shape {edge_ids.shape}")
        if edge_ids.min() < 0 or edge_ids[0].max() >= e.num_blocks or edge_ids[1].max() >= ch_blocks:
            raise JpcError(f"{e.label}: edge_ids out of range (sum blocks 0..{e.num_blocks - 1}, "
                           f"child blocks 0..{ch_blocks - 1})")
        edge_ids = edge_ids.astype(np.int64)
        if np.unique(edge_ids[0]).size != e.num_blocks:
            raise JpcError(f"{e.label}: some sum node block has no edge")
        if np.unique(edge_ids[0] * ch_blocks + edge_ids[1]).size != edge_ids.shape[1]:
            raise JpcError(f"{e.label}: edge_ids lists the same (sum block, child block) pair twice")
        self._cache[key] = edge_ids
        return edge_ids

    def sum_weights(self, e: _Entry) -> np.ndarray:
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
            mask = _array(e.info["zero_param_mask"], f"{e.label}: zero_param_mask", "b")
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

    # ---- building ---------------------------------------------------------------------------
    def build(self) -> NodeGroup:
        root = len(self.entries) - 1
        reachable, stack = {root}, [root]
        while stack:
            for c in self.entries[stack.pop()].children:
                if c not in reachable:
                    reachable.add(c)
                    stack.append(c)
        self._check_budget(reachable)
        groups: dict[int, NodeGroup] = {}
        owners: dict[int, NodeGroup] = {}
        for i in sorted(reachable):
            e = self.entries[i]
            try:
                groups[i] = self._build_one(e, [groups[c] for c in e.children], owners)
            except StructureError as err:
                raise JpcError(f"{e.label}: {err}") from err
        return groups[root]

    def _check_budget(self, reachable: set[int]) -> None:
        total, tables = 0, set()
        for i in reachable:
            e = self.entries[i]
            if e.kind == "Product":
                total += e.num_nodes * len(e.children)
                continue
            if self.sources[i] in tables:
                continue  # a tied group shares its source's table
            tables.add(self.sources[i])
            if e.kind == "Input":
                total += e.num_nodes * self.input_dist(e)[1]
            else:
                cbs, ch_blocks = self.sum_shape(e)
                total += e.num_nodes * ch_blocks * cbs
        if total > MAX_TOTAL_ELEMENTS:
            raise JpcError(f"the circuit needs {total} table entries as dense node groups, more than this "
                           f"reader allows ({MAX_TOTAL_ELEMENTS})")

    def _build_one(self, e: _Entry, children: list[NodeGroup], owners: dict[int, NodeGroup]) -> NodeGroup:
        name = f"jpc[{e.index}]"
        src = self.sources[e.index]
        if e.kind == "Input":
            var, vocab = self.input_dist(e)
            if src in owners:
                return Categorical(var, e.num_nodes, vocab, tie_to=owners[src], name=name)
            group = Categorical(var, e.num_nodes, vocab, probs=self.input_probs(self.entries[src]), name=name)
            owners[src] = group
            return group
        if e.kind == "Sum":
            self.sum_shape(e)
            if src in owners:
                return Sum(*children, num_nodes=e.num_nodes, tie_to=owners[src], name=name)
            weights = self.sum_weights(self.entries[src])
            if (self.simplify and self.class_size[src] == 1 and len(children) == 1
                    and weights.shape[0] == weights.shape[1] and np.array_equal(weights, np.eye(weights.shape[0]))):
                return children[0]  # an identity sum passes its child through
            group = Sum(*children, num_nodes=e.num_nodes, weights=weights, name=name)
            owners[src] = group
            return group
        edges = self.product_edges(e)
        if (self.simplify and len(children) == 1 and children[0].num_nodes == e.num_nodes
                and np.array_equal(edges[:, 0], np.arange(e.num_nodes))):
            return children[0]  # a one-child identity product passes its child through
        return Product(*children, edges=edges, name=name)


def _root_circuit(root: NodeGroup, i: int) -> Circuit:
    """The circuit under node ``i`` of the root group (a one-node copy of the root if needed)."""
    try:
        if root.num_nodes == 1:
            return Circuit(root)
        name = f"{root.name}[{i}]"
        if isinstance(root, Sum):
            single = Sum(*root.children, num_nodes=1, weights=root.weights[i:i + 1], name=name)
        elif isinstance(root, Product):
            single = Product(*root.children, edges=root.edges[i:i + 1], name=name)
        else:
            single = Categorical(root.var, 1, root.vocab, probs=root.probs[i:i + 1], name=name)
        return Circuit(single)
    except StructureError as err:
        raise JpcError(f"the loaded node graph is not a valid circuit: {err}") from err


def _load_root_group(path, simplify: bool, missing_params: str, max_bytes: int) -> NodeGroup:
    entries = _parse(read_jpc_entries(path, max_bytes=max_bytes))
    return _Loader(entries, simplify, missing_params).build()


def load_jpc_roots(path, *, simplify: bool = True, missing_params: str = "error",
                   max_bytes: int = DEFAULT_MAX_BYTES) -> list[Circuit]:
    """One :class:`Circuit` per node of the root node vector of a ``.jpc`` (pyjuice's
    ``pc(x)`` returns ``[B, num_roots]``); the circuits share all groups below the root."""
    group = _load_root_group(path, simplify, missing_params, max_bytes)
    return [_root_circuit(group, i) for i in range(group.num_nodes)]


def load_jpc(path, root: int | None = None, *, simplify: bool = True, missing_params: str = "error",
             max_bytes: int = DEFAULT_MAX_BYTES) -> Circuit:
    """Load a pyjuice ``.jpc`` file as a :class:`Circuit`, without pyjuice.

    ``root`` picks one node of a root vector with several nodes (else that is an error).
    ``simplify`` drops pyjuice's pass-through nodes; ``missing_params='uniform'`` loads a file
    saved before its parameters were initialized. Every problem is a :class:`JpcError`.
    """
    group = _load_root_group(path, simplify, missing_params, max_bytes)
    if root is None:
        if group.num_nodes != 1:
            raise JpcError(f"{os.fspath(path)!r}: the root vector has {group.num_nodes} root nodes "
                           f"(0..{group.num_nodes - 1}); pass root=i, or use load_jpc_roots()")
        root = 0
    if type(root) is not int or not 0 <= root < group.num_nodes:
        raise JpcError(f"root={root!r} is out of range: the root vector has {group.num_nodes} node(s)")
    return _root_circuit(group, root)
