"""Shared helpers of the ``.jpc`` tests: small circuits, comparisons, pyjuice's values (the fixtures
``juice`` and ``hmm_file`` are in tests/structures/conftest.py)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from helpers.brute import all_assignments, evaluate
from structures import Categorical, Circuit, Product, Sum

#: pyjuice's sparse block tensors warn on every use; the tests do not care.
IGNORE_SPARSE_WARNING = pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")


def pj_eval(root_ns, xs: np.ndarray) -> np.ndarray:
    """Brute-force value ``[N, num_root_nodes]`` of a pyjuice node graph, read from pyjuice's own
    in-memory objects (independent of our reader)."""
    values = {}
    for ns in root_ns:
        if ns.is_input():
            src = ns.get_source_ns()
            probs = src._params.detach().double().numpy().reshape(ns.num_nodes, -1)
            values[ns] = probs[:, xs[:, ns.scope.to_list()[0]]].T
        elif ns.is_prod():
            edges = ns.edge_ids.numpy()
            out = np.ones((len(xs), ns.num_nodes))
            for j, cs in enumerate(ns.chs):
                col = edges[:, j]
                if ns.is_block_sparse():
                    col = (col[:, None] * ns.block_size + np.arange(ns.block_size)[None, :]).reshape(-1)
                out = out * values[cs][:, col]
            values[ns] = out
        else:
            weights = ns.get_source_ns().get_params(as_matrix=True).double().numpy()
            weights = weights / weights.sum(1, keepdims=True)
            values[ns] = np.concatenate([values[cs] for cs in ns.chs], axis=1) @ weights.T
    return values[root_ns]


def signature(circuit: Circuit):
    """Structure of a circuit as plain data: kinds, sizes, child indices, tie classes."""
    index = {g.id: i for i, g in enumerate(circuit.groups)}
    tie_root = {}
    for g in circuit.groups:
        src = getattr(g, "tie_to", None) or g
        tie_root.setdefault(src.id, index[g.id])
    rows = []
    for g in circuit.groups:
        row = [type(g).__name__, g.num_nodes, tuple(index[c.id] for c in g.children)]
        if isinstance(g, Categorical):
            row += [g.var, g.vocab]
        if isinstance(g, Product):
            row += [g.edges.tolist()]
        if isinstance(g, (Categorical, Sum)):
            row += [tie_root[(g.tie_to or g).id]]
        rows.append(tuple(row))
    return rows


def params_of(circuit: Circuit) -> list[np.ndarray]:
    return [g.probs if isinstance(g, Categorical) else g.weights
            for g in circuit.groups if isinstance(g, (Categorical, Sum))]


def assert_same_circuit(a: Circuit, b: Circuit, atol: float) -> None:
    assert signature(a) == signature(b)
    for pa, pb in zip(params_of(a), params_of(b)):
        np.testing.assert_allclose(pa, pb, rtol=0, atol=atol)


def write_entries(path, entries) -> None:
    with open(path, "wb") as f:
        pickle.dump(entries, f, protocol=4)


def latent_tree() -> Circuit:
    """A hand-written latent tree: Z0 -> (Z1 -> x0, x1), (Z2 -> x2, x3); binary leaves."""
    rng = np.random.default_rng(3)
    leaves = [Categorical(v, 3, 2, rng=rng, name=f"x{v}|z") for v in range(4)]
    z1 = Sum(Product(leaves[0], leaves[1]), num_nodes=2, rng=rng, name="z1")
    z2 = Sum(Product(leaves[2], leaves[3]), num_nodes=2, rng=rng, name="z2")
    pair = Product(z1, z2, edges=[[0, 0], [0, 1], [1, 0], [1, 1]], name="z1z2")
    return Circuit(Sum(pair, num_nodes=1, rng=rng, name="z0"))


def mixture_circuit() -> Circuit:
    """A Sum over two different sub-circuits on the same four variables."""
    rng = np.random.default_rng(4)
    independent = Product(*[Categorical(v, 2, 2, rng=rng) for v in range(4)])
    tree = latent_tree().root.children[0]
    return Circuit(Sum(independent, tree, num_nodes=1, rng=rng, name="mixture"))


def nested_circuit() -> Circuit:
    """A Sum with a Sum child and a Product with a Product child (pyjuice allows neither)."""
    rng = np.random.default_rng(5)
    a, b, c = (Categorical(v, 2, 3, rng=rng) for v in range(3))
    inner = Product(a, b)
    outer = Product(inner, c)
    s1 = Sum(outer, num_nodes=3, rng=rng)
    return Circuit(Sum(s1, outer, num_nodes=1, rng=rng))


def check_against_pyjuice(circuit: Circuit, ns, column: int = 0) -> np.ndarray:
    xs = all_assignments(circuit)
    p = evaluate(circuit, xs)
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(p, pj_eval(ns, xs)[:, column], rtol=2e-5, atol=1e-9)
    return p
