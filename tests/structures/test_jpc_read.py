"""Loading pyjuice's ``.jpc`` files (saved by pyjuice itself) into our circuits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import structures
from helpers.brute import all_assignments, brute_log_prob, evaluate
from helpers.jpc_files import (IGNORE_SPARSE_WARNING, assert_same_circuit, check_against_pyjuice, mixture_circuit,
                               signature, write_entries)
from structures import Categorical, Circuit, JpcError, Sum, load_jpc, load_jpc_roots, save_jpc
from structures.jpc import read_jpc_entries

pytestmark = IGNORE_SPARSE_WARNING


def dyadic_rows(rng, rows: int, cols: int, denom: int = 64) -> np.ndarray:
    """Random distributions exactly representable in float32 (so pyjuice's float32 is exact)."""
    counts = np.stack([rng.multinomial(denom - cols, np.full(cols, 1.0 / cols)) + 1 for _ in range(rows)])
    return counts / denom


def hmm_forward(alpha, beta, gamma, seqs) -> np.ndarray:
    out = []
    for x in seqs:
        f = gamma * beta[:, x[0]]
        for t in range(1, len(x)):
            f = (f @ alpha) * beta[:, x[t]]
        out.append(f.sum())
    return np.array(out)


@pytest.mark.pyjuice
@pytest.mark.parametrize("hidden", [4, 6])
def test_pyjuice_hmm_matches_forward_algorithm(juice, tmp_path, hidden):
    rng = np.random.default_rng(hidden)
    V, L = 3, 5
    alpha, beta, gamma = dyadic_rows(rng, hidden, hidden), dyadic_rows(rng, hidden, V), dyadic_rows(rng, 1, hidden)[0]
    as_tensors = {name: torch.tensor(t, dtype=torch.float32) for name, t in zip(("alpha", "beta", "gamma"),
                                                                               (alpha, beta, gamma))}
    ns = juice.structures.HMM(L, hidden, V, homogeneous=True, **as_tensors)
    path = str(tmp_path / "hmm.jpc")
    juice.save(path, ns)
    raw = read_jpc_entries(path)
    assert any(e.get("source_node", -1) > i for i, e in enumerate(raw))  # a tie pointing forward
    assert {e["block_size"] for e in raw if e["type"] == "Input"} == {2 if hidden == 6 else 4}

    circuit = load_jpc(path)
    seqs = rng.integers(0, V, size=(40, L))
    expected = hmm_forward(alpha, beta, gamma, seqs)
    np.testing.assert_allclose(evaluate(circuit, seqs), expected, rtol=1e-9, atol=0)
    assert evaluate(circuit, all_assignments(circuit)).sum() == pytest.approx(1.0, abs=1e-9)
    assert sum(isinstance(g, Categorical) and g.tie_to is not None for g in circuit.groups) == L - 1
    assert sum(isinstance(g, Sum) and g.tie_to is not None for g in circuit.groups) == L - 2

    model = structures.compile(circuit, dtype=torch.float64)
    with torch.no_grad():
        log_p = model.log_prob(torch.as_tensor(seqs)).numpy()
    np.testing.assert_allclose(log_p, np.log(expected), rtol=0, atol=1e-9)


def _check_marginals(circuit: Circuit, rng) -> None:
    """Marginal log-probabilities agree between brute force, the compiled model and the joint."""
    model = structures.compile(circuit, dtype=torch.float64)
    xs = all_assignments(circuit)
    p = evaluate(circuit, xs)
    x = xs[rng.integers(len(xs), size=6)]
    observed = rng.random(x.shape) < 0.5
    with torch.no_grad():
        got = model.log_prob(torch.as_tensor(x), torch.as_tensor(observed)).numpy()
    for b in range(len(x)):
        consistent = np.all((xs == x[b]) | ~observed[b], axis=1)
        assert got[b] == pytest.approx(np.log(p[consistent].sum()), abs=1e-9)
        assert got[b] == pytest.approx(brute_log_prob(circuit, x[b], observed[b]), abs=1e-9)


@pytest.mark.pyjuice
def test_pyjuice_hclt_loads(juice, tmp_path):
    torch.manual_seed(0)
    data = torch.randint(0, 3, (200, 5))
    ns = juice.structures.HCLT(data, num_latents=4, num_bins=3, chunk_size=8, input_node_params={"num_cats": 3})
    ns.init_parameters()
    juice.save(str(tmp_path / "hclt.jpc"), ns)
    circuit = load_jpc(tmp_path / "hclt.jpc")
    assert circuit.num_vars == 5 and circuit.vocab_sizes == [3] * 5
    check_against_pyjuice(circuit, ns)
    _check_marginals(circuit, np.random.default_rng(0))


@pytest.mark.pyjuice
def test_pyjuice_hclt_with_several_roots(juice, tmp_path):
    torch.manual_seed(1)
    data = torch.randint(0, 2, (100, 4))
    ns = juice.structures.HCLT(data, num_latents=2, num_bins=2, chunk_size=4, num_root_ns=2,
                               input_node_params={"num_cats": 2})
    ns.init_parameters()
    path = tmp_path / "hclt2.jpc"
    juice.save(str(path), ns)
    with pytest.raises(JpcError, match="2 root nodes"):
        load_jpc(path)
    circuits = load_jpc_roots(path)
    assert len(circuits) == 2
    for i, circuit in enumerate(circuits):
        check_against_pyjuice(circuit, ns, column=i)
    np.testing.assert_allclose(evaluate(load_jpc(path, root=1), all_assignments(circuits[1])),
                               evaluate(circuits[1], all_assignments(circuits[1])), rtol=1e-12)
    with pytest.raises(JpcError, match="out of range"):
        load_jpc(path, root=2)


@pytest.mark.pyjuice
def test_pyjuice_rat_spn_and_pd_load(juice, tmp_path):
    torch.manual_seed(2)
    rat = juice.structures.RAT_SPN(num_vars=5, num_latents=2, depth=2, num_repetitions=2,
                                   input_node_params={"num_cats": 2})
    pd = juice.structures.PD(data_shape=(2, 2), num_latents=2, split_intervals=1, input_node_params={"num_cats": 3})
    for name, ns in (("rat", rat), ("pd", pd)):
        ns.init_parameters()
        juice.save(str(tmp_path / f"{name}.jpc"), ns)
        circuit = load_jpc(tmp_path / f"{name}.jpc")
        check_against_pyjuice(circuit, ns)
        _check_marginals(circuit, np.random.default_rng(1))
        full = load_jpc(tmp_path / f"{name}.jpc", simplify=False)
        assert len(full.groups) == len(list(ns)) >= len(circuit.groups)
        check_against_pyjuice(full, ns)


def _small_pyjuice_circuit(juice, product_edges=None, sparse=False):
    from pyjuice.nodes.distributions import Categorical as PjCategorical
    with juice.set_block_size(2):
        i0 = juice.inputs(0, num_node_blocks=2, dist=PjCategorical(num_cats=3))
        i1 = juice.inputs(1, num_node_blocks=2, dist=PjCategorical(num_cats=2))
        if product_edges is None:
            prod = juice.multiply(i0, i1)
        else:
            prod = juice.multiply(i0, i1, edge_ids=torch.tensor(product_edges), sparse_edges=sparse)
        mid = juice.summate(prod, num_node_blocks=2)
    root = juice.summate(juice.multiply(mid), num_node_blocks=1, block_size=1)
    root.init_parameters()
    return root


@pytest.mark.pyjuice
def test_compiled_pass_through_nodes_are_simplified(juice, tmp_path):
    root = _small_pyjuice_circuit(juice)
    plain = tmp_path / "plain.jpc"
    juice.save(str(plain), root)
    # what juice.compile does for a sum child at a lower depth: identity sum + one-child product
    mid = root.chs[0].chs[0]
    child = mid.chs[0]
    pass_sum = juice.summate(child, num_node_blocks=child.num_node_blocks, block_size=child.block_size,
                             edge_ids=torch.arange(child.num_node_blocks)[None, :].repeat(2, 1),
                             params=torch.eye(child.block_size)[None].repeat(child.num_node_blocks, 1, 1))
    mid.chs[0] = juice.multiply(pass_sum)
    compiled = tmp_path / "compiled.jpc"
    juice.save(str(compiled), root)
    assert len(read_jpc_entries(compiled)) == len(read_jpc_entries(plain)) + 2

    simple = load_jpc(compiled)
    assert signature(simple) == signature(load_jpc(plain))
    check_against_pyjuice(simple, root)
    full = load_jpc(compiled, simplify=False)
    assert len(full.groups) == len(read_jpc_entries(compiled))
    check_against_pyjuice(full, root)


@pytest.mark.pyjuice
def test_product_block_count_differs_from_first_child(juice, tmp_path):
    # 3 product blocks over children of 2 blocks: pyjuice saves it but its own loader misreads it
    root = _small_pyjuice_circuit(juice, product_edges=[[0, 1], [1, 0], [1, 1]])
    path = tmp_path / "quirk.jpc"
    juice.save(str(path), root)
    circuit = load_jpc(path)
    check_against_pyjuice(circuit, root)


@pytest.mark.pyjuice
def test_sparse_product_edges(juice, tmp_path):
    edges = [[0, 3], [1, 1], [2, 0], [3, 2], [0, 0], [3, 3]]  # node level, 6 products of 2-blocks
    root = _small_pyjuice_circuit(juice, product_edges=edges, sparse=True)
    path = tmp_path / "sparse.jpc"
    juice.save(str(path), root)
    assert read_jpc_entries(path)[2]["edge_ids"].shape == (6, 2)
    check_against_pyjuice(load_jpc(path), root)


@pytest.mark.pyjuice
def test_legacy_keys(juice, tmp_path):
    root = _small_pyjuice_circuit(juice)
    path = tmp_path / "new.jpc"
    juice.save(str(path), root)
    expected = evaluate(load_jpc(path), all_assignments(load_jpc(path)))
    entries = read_jpc_entries(path)
    for e in entries:
        e["num_node_groups"], e["group_size"] = e.pop("num_node_blocks"), e.pop("block_size")
    write_entries(tmp_path / "groups.jpc", entries)
    circuit = load_jpc(tmp_path / "groups.jpc")
    np.testing.assert_allclose(evaluate(circuit, all_assignments(circuit)), expected, rtol=1e-12)

    ours = mixture_circuit()
    save_jpc(ours, tmp_path / "bs1.jpc", block_size=1)
    entries = read_jpc_entries(tmp_path / "bs1.jpc")
    for e in entries:
        assert e.pop("block_size") == 1
        e["num_nodes"] = e.pop("num_node_blocks")
    write_entries(tmp_path / "nodes.jpc", entries)
    assert_same_circuit(load_jpc(tmp_path / "nodes.jpc"), ours, atol=1e-12)


@pytest.mark.pyjuice
def test_missing_parameters(juice, tmp_path):
    ns = juice.structures.HMM(3, 2, 2)  # never initialized: no params in the file
    juice.save(str(tmp_path / "bare.jpc"), ns)
    with pytest.raises(JpcError, match="no parameters"):
        load_jpc(tmp_path / "bare.jpc")
    circuit = load_jpc(tmp_path / "bare.jpc", missing_params="uniform")
    assert evaluate(circuit, all_assignments(circuit)) == pytest.approx(np.full(8, 1 / 8))


@pytest.mark.pyjuice
def test_unsupported_distributions(juice, tmp_path):
    from pyjuice.nodes.distributions import External, Gaussian
    for dist, name in ((Gaussian(mu=0.0, sigma=1.0), "Gaussian"), (External(), "External")):
        ns = juice.summate(juice.inputs(0, num_node_blocks=2, dist=dist), num_node_blocks=1)
        juice.save(str(tmp_path / f"{name}.jpc"), ns)
        with pytest.raises(JpcError, match=f"unsupported distribution {name}"):
            load_jpc(tmp_path / f"{name}.jpc")
