"""Hypothesis strategies: random circuits (every builder, and hand-made DAGs from the node API) and
random queries (tokens, observed positions, soft evidence from tame to ±1e4 and -inf).

Every circuit has at most 6 variables of vocabulary at most 4, so brute force enumerates at most
4,096 assignments. Hypothesis draws the *structure* (so failures shrink to small structures);
parameter values come from a numpy generator seeded by a drawn integer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx
import numpy as np
from hypothesis import strategies as st

import structures
from structures import Categorical, Circuit, NodeGroup, Product, Sum

MAX_VARS = 6
MAX_VOCAB = 4
seeds = st.integers(0, 2**32 - 1)


def _dirichlet(rng: np.random.Generator, shape, zero_fraction: float = 0.0) -> np.ndarray:
    """Random rows of probabilities; with ``zero_fraction`` some entries are structural zeros
    (every row keeps at least one positive entry)."""
    table = rng.gamma(0.7, size=shape) + 1e-3
    if zero_fraction:
        zeros = rng.random(shape) < zero_fraction
        keep = rng.integers(0, shape[-1], size=shape[:-1])
        zeros[np.arange(shape[0]), keep] = False
        table[zeros] = 0.0
    return table / table.sum(-1, keepdims=True)


# ----------------------------------------------------------------------------- builders
@st.composite
def hmm_circuits(draw, n: int, vocab: int) -> Circuit:
    return structures.hmm(n, draw(st.integers(1, 3)), vocab, homogeneous=draw(st.booleans()), seed=draw(seeds))


@st.composite
def spans(draw, n: int) -> list[list[int]]:
    """A random partition of ``0..n-1`` into consecutive runs."""
    cuts = [i for i in range(1, n) if draw(st.booleans())]
    bounds = [0, *cuts, n]
    return [list(range(a, b)) for a, b in zip(bounds, bounds[1:])]


@st.composite
def chain_circuits(draw, n: int, vocab: int) -> Circuit:
    emitter = draw(st.sampled_from(["factorized", "mixture"]))
    emit = structures.factorized_emitter if emitter == "factorized" else \
        structures.mixture_emitter(draw(st.integers(1, 3)))
    return structures.hidden_chain(n, draw(st.integers(1, 3)), vocab, span=draw(spans(n)), emitter=emit,
                                   homogeneous=draw(st.booleans()), seed=draw(seeds))


@st.composite
def trees(draw, n: int) -> nx.Graph:
    """A random labeled tree on ``0..n-1`` (random parent per node, then a random relabeling)."""
    labels = draw(st.permutations(range(n)))
    tree = nx.Graph()
    tree.add_nodes_from(range(n))
    for i in range(1, n):
        tree.add_edge(labels[i], labels[draw(st.integers(0, i - 1))])
    return tree


@st.composite
def tree_circuits(draw, n: int, vocab: int) -> Circuit:
    tree = draw(trees(n))
    root = draw(st.none() | st.integers(0, n - 1))
    return structures.latent_tree(tree, draw(st.integers(1, 3)), vocab, root=root, seed=draw(seeds))


@st.composite
def hclt_circuits(draw, n: int, vocab: int) -> Circuit:
    rng = np.random.default_rng(draw(seeds))
    # Correlated columns (noisy copies of one column) so that Chow-Liu has something to find.
    base = rng.integers(0, vocab, size=(200, 1))
    noise = rng.integers(0, vocab, size=(200, n))
    data = np.where(rng.random((200, n)) < rng.random(n), base, noise)
    return structures.hclt(data, draw(st.integers(1, 3)), vocab, seed=draw(seeds))


_BUILDERS = {"hmm": hmm_circuits, "chain": chain_circuits, "tree": tree_circuits, "hclt": hclt_circuits}


@st.composite
def mixture_circuits(draw, n: int, vocab: int) -> Circuit:
    kinds = draw(st.lists(st.sampled_from(sorted(_BUILDERS)), min_size=1, max_size=3))
    parts = [draw(_BUILDERS[k](n, vocab)) for k in kinds]
    if draw(st.booleans()):
        parts.append(parts[0])                                 # the same sub-circuit twice: a DAG
    weights = None if draw(st.booleans()) else _dirichlet(np.random.default_rng(draw(seeds)), (1, len(parts)))
    return structures.mixture(*parts, weights=weights, seed=draw(seeds))


@st.composite
def builder_circuits(draw) -> Circuit:
    n = draw(st.integers(1, MAX_VARS))
    vocab = draw(st.integers(2, MAX_VOCAB))
    kind = draw(st.sampled_from(sorted(_BUILDERS) + ["mixture"]))
    return draw((mixture_circuits if kind == "mixture" else _BUILDERS[kind])(n, vocab))


# ----------------------------------------------------------------------------- hand-made DAGs
class _DagBuilder:
    """Builds a random smooth, decomposable DAG top-down over a scope, reusing groups (sharing)
    and tying tables as it goes."""

    def __init__(self, draw, rng: np.random.Generator, vocab: list[int]):
        self.draw, self.rng, self.vocab = draw, rng, vocab
        self.built: dict[tuple[frozenset, int], list[NodeGroup]] = {}
        self.inputs: list[Categorical] = []
        self.sums: list[Sum] = []

    def group(self, scope: tuple[int, ...], k: int, budget: int) -> NodeGroup:
        draw = self.draw
        key = (frozenset(scope), k)
        if self.built.get(key) and draw(st.integers(0, 2)) == 0:              # share an existing group
            return draw(st.sampled_from(self.built[key]))
        kind = "leaf" if len(scope) == 1 else "product"
        if budget > 0 and draw(st.integers(0, 2)) == 0:
            kind = draw(st.sampled_from(["sum", "sum", "product"]))
        if kind == "leaf":
            g = self.leaf(scope[0], k)
        elif kind == "product":
            g = self.product(scope, k, budget)
        else:
            g = self.sum(scope, k, budget)
        self.built.setdefault(key, []).append(g)
        return g

    def leaf(self, var: int, k: int) -> Categorical:
        vocab = self.vocab[var]
        same_shape = [g for g in self.inputs if g.parameter_shape == (k, vocab)]
        choice = self.draw(st.integers(0, 5))
        if same_shape and choice < 2:
            g = Categorical(var, k, vocab, tie_to=self.draw(st.sampled_from(same_shape)))
        elif choice == 2:
            # The table's owner lies outside the circuit (on a variable the circuit does not have).
            orphan = Categorical(MAX_VARS + 7, k, vocab, probs=_dirichlet(self.rng, (k, vocab)))
            g = Categorical(var, k, vocab, tie_to=orphan)
        else:
            zeros = 0.2 if self.draw(st.integers(0, 3)) == 0 else 0.0
            g = Categorical(var, k, vocab, probs=_dirichlet(self.rng, (k, vocab), zeros))
        self.inputs.append(g)
        return g

    def product(self, scope: tuple[int, ...], k: int, budget: int) -> Product:
        draw = self.draw
        if len(scope) == 1 or (budget > 0 and draw(st.integers(0, 4)) == 0):         # budget > 0 here
            # One child: the product only re-indexes (and may duplicate) the child's nodes.
            child = self.group(scope, draw(st.integers(1, 3)), budget - 1)
            return Product(child, edges=self.rng.integers(0, child.num_nodes, size=(k, 1)))
        order = draw(st.permutations(scope))
        parts_count = draw(st.integers(2, min(3, len(scope))))
        cuts = sorted(draw(st.lists(st.integers(1, len(scope) - 1), min_size=parts_count - 1,
                                    max_size=parts_count - 1, unique=True)))
        bounds = [0, *cuts, len(scope)]
        parts = [tuple(sorted(order[a:b])) for a, b in zip(bounds, bounds[1:])]
        sizes = [draw(st.integers(1, 3)) for _ in parts]
        children = [self.group(part, size, budget) for part, size in zip(parts, sizes)]
        if all(c.num_nodes == k for c in children) and draw(st.booleans()):
            return Product(*children)                                          # identity edges
        edges = np.stack([self.rng.integers(0, c.num_nodes, size=k) for c in children], axis=1)
        return Product(*children, edges=edges)

    def sum(self, scope: tuple[int, ...], k: int, budget: int) -> Sum:
        draw = self.draw
        children = [self.group(scope, draw(st.integers(1, 3)), budget - 1) for _ in range(draw(st.integers(1, 3)))]
        width = sum(c.num_nodes for c in children)
        same_shape = [g for g in self.sums if g.parameter_shape == (k, width)]
        if same_shape and draw(st.booleans()):
            g = Sum(*children, num_nodes=k, tie_to=draw(st.sampled_from(same_shape)))
        else:
            zeros = 0.3 if draw(st.booleans()) else 0.0
            g = Sum(*children, num_nodes=k, weights=_dirichlet(self.rng, (k, width), zeros))
        self.sums.append(g)
        return g


@st.composite
def dag_circuits(draw, max_vars: int = MAX_VARS) -> Circuit:
    """A random circuit from the node API: random recursive partitions, 1-3 nodes per group,
    random product edges, multi-child sums, shared groups, tied tables, structural zeros, and a
    vocabulary per variable."""
    n = draw(st.integers(1, max_vars))
    vocab = draw(st.lists(st.integers(1, MAX_VOCAB), min_size=n, max_size=n))
    builder = _DagBuilder(draw, np.random.default_rng(draw(seeds)), vocab)
    root = builder.group(tuple(range(n)), 1, budget=draw(st.integers(0, 2)))
    if draw(st.booleans()):
        # A root mixing the first root with more groups over all variables (often shared ones).
        other = builder.group(tuple(range(n)), draw(st.integers(1, 3)), budget=1)
        root = Sum(root, other, num_nodes=1, weights=_dirichlet(builder.rng, (1, 1 + other.num_nodes)))
    return Circuit(root)


def circuits() -> st.SearchStrategy[Circuit]:
    """Any circuit: a builder's or a hand-made DAG."""
    return st.one_of(builder_circuits(), dag_circuits())


# ----------------------------------------------------------------------------- queries
@dataclass
class Query:
    """One batch of query arguments as numpy arrays: tokens [B, n], observed [B, n], soft evidence
    [B, n, V] or None, node potentials [B, num_input_nodes] or None."""
    x: np.ndarray
    observed: np.ndarray
    soft: np.ndarray | None
    potentials: np.ndarray | None = None

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    def rows(self, keep: np.ndarray) -> "Query":
        def take(a):
            return None if a is None else a[keep]
        return Query(self.x[keep], self.observed[keep], take(self.soft), take(self.potentials))


EVIDENCE_KINDS = ("none", "normal", "huge", "tiny", "neg_inf")


def evidence_array(rng: np.random.Generator, kind: str, batch: int, vocab_sizes: list[int],
                   impossible_at: int | None = None) -> np.ndarray | None:
    """Soft evidence [B, n, V] of one kind. ``neg_inf`` forbids random tokens but leaves every
    position at least one allowed token of its vocabulary, unless ``impossible_at`` names a position
    whose every token is forbidden. Entries past a variable's vocabulary get arbitrary values (they
    must be ignored)."""
    n, vmax = len(vocab_sizes), max(vocab_sizes)
    if kind == "none":
        return None
    scale = {"normal": 2.0, "huge": 1e4, "tiny": 1e-12, "neg_inf": 3.0}[kind]
    soft = rng.normal(size=(batch, n, vmax)) * scale
    if kind == "neg_inf":
        forbid = rng.random((batch, n, vmax)) < 0.5
        for i, v in enumerate(vocab_sizes):
            keep = rng.integers(0, v, size=batch)
            forbid[np.arange(batch), i, keep] = False
        soft[forbid] = -np.inf
    # Past a variable's vocabulary: large values that would wreck a computation using them.
    for i, v in enumerate(vocab_sizes):
        soft[:, i, v:] = rng.choice([1e4, -np.inf, 0.0], size=(batch, vmax - v))
    if impossible_at is not None:
        soft[:, impossible_at, :] = -np.inf
    return soft


def potentials_array(rng: np.random.Generator, kind: str, batch: int, num_input_nodes: int) -> np.ndarray | None:
    """Node potentials [B, num_input_nodes] (log-potentials on the input nodes) of one kind."""
    if kind == "none":
        return None
    potentials = rng.normal(size=(batch, num_input_nodes)) * {"normal": 2.0, "huge": 1e4, "neg_inf": 1.0}[kind]
    if kind == "neg_inf":
        potentials[rng.random(potentials.shape) < 0.3] = -np.inf
    return potentials


#: Kinds a brute-force reference can fold into probabilities (``huge`` cannot: exp(1e4) overflows).
POTENTIAL_KINDS = ("none", "none", "none", "normal", "neg_inf")


@st.composite
def queries(draw, circuit: Circuit, max_batch: int = 3, kinds=EVIDENCE_KINDS, potential_kinds=POTENTIAL_KINDS,
            max_free_configs: int | None = None) -> Query:
    """Random tokens, observed, soft evidence and node potentials for ``circuit``. With
    ``max_free_configs`` the unobserved positions of each row have at most that many joint
    configurations."""
    vocab_sizes = circuit.vocab_sizes
    n = circuit.num_vars
    batch = draw(st.integers(1, max_batch))
    rng = np.random.default_rng(draw(seeds))
    x = np.stack([rng.integers(0, v, size=batch) for v in vocab_sizes], axis=1).astype(np.int64)
    observed = np.array(draw(st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=batch,
                                  max_size=batch)), dtype=bool).reshape(batch, n)
    if max_free_configs is not None:
        for row in observed:
            while math.prod(v for v, m in zip(vocab_sizes, row) if not m) > max_free_configs:
                row[np.flatnonzero(~row)[0]] = True
    soft = evidence_array(rng, draw(st.sampled_from(kinds)), batch, vocab_sizes)
    num_input_nodes = sum(g.num_nodes for g in circuit.groups if isinstance(g, Categorical))
    potentials = potentials_array(rng, draw(st.sampled_from(potential_kinds)), batch, num_input_nodes)
    return Query(x, observed, soft, potentials)
