"""pyjuice ``.jpc`` interop: loading pyjuice's circuits, writing ours, and refusing bad files."""
from __future__ import annotations

import builtins
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import structures
from brute import all_assignments, brute_log_prob, evaluate
from structures import Categorical, Circuit, JpcError, Product, Sum, load_jpc, load_jpc_roots, save_jpc
from structures.jpc import read_jpc_entries
from structures.jpc.safe_pickle import categorical_dist_pickle

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")


@pytest.fixture(scope="module")
def juice():
    return pytest.importorskip("pyjuice")


# ---- helpers ---------------------------------------------------------------------------------

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


@pytest.fixture
def hmm_file(tmp_path):
    path = tmp_path / "hmm.jpc"
    save_jpc(structures.hmm(4, 4, 3, seed=1), path)
    return path


# ---- pyjuice's circuits into ours ------------------------------------------------------------

@pytest.mark.pyjuice
@pytest.mark.parametrize("hidden", [4, 6])
def test_pyjuice_hmm_matches_forward_algorithm(juice, tmp_path, hidden):
    rng = np.random.default_rng(hidden)
    V, L = 3, 5
    alpha, beta, gamma = dyadic_rows(rng, hidden, hidden), dyadic_rows(rng, hidden, V), dyadic_rows(rng, 1, hidden)[0]
    ns = juice.structures.HMM(L, hidden, V, homogeneous=True, alpha=torch.tensor(alpha, dtype=torch.float32),
                              beta=torch.tensor(beta, dtype=torch.float32), gamma=torch.tensor(gamma, dtype=torch.float32))
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


def _check_against_pyjuice(circuit: Circuit, ns, column: int = 0) -> np.ndarray:
    xs = all_assignments(circuit)
    p = evaluate(circuit, xs)
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(p, pj_eval(ns, xs)[:, column], rtol=2e-5, atol=1e-9)
    return p


def _check_marginals(circuit: Circuit, rng) -> None:
    """Marginal log-probabilities agree between brute force, the compiled model and the joint."""
    model = structures.compile(circuit, dtype=torch.float64)
    xs = all_assignments(circuit)
    p = evaluate(circuit, xs)
    x = xs[rng.integers(len(xs), size=6)]
    mask = rng.random(x.shape) < 0.5
    with torch.no_grad():
        got = model.log_prob(torch.as_tensor(x), torch.as_tensor(mask)).numpy()
    for b in range(len(x)):
        consistent = np.all((xs == x[b]) | ~mask[b], axis=1)
        assert got[b] == pytest.approx(np.log(p[consistent].sum()), abs=1e-9)
        assert got[b] == pytest.approx(brute_log_prob(circuit, x[b], mask[b]), abs=1e-9)


@pytest.mark.pyjuice
def test_pyjuice_hclt_loads(juice, tmp_path):
    torch.manual_seed(0)
    data = torch.randint(0, 3, (200, 5))
    ns = juice.structures.HCLT(data, num_latents=4, num_bins=3, chunk_size=8, input_node_params={"num_cats": 3})
    ns.init_parameters()
    juice.save(str(tmp_path / "hclt.jpc"), ns)
    circuit = load_jpc(tmp_path / "hclt.jpc")
    assert circuit.num_vars == 5 and circuit.vocab_sizes == [3] * 5
    _check_against_pyjuice(circuit, ns)
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
        _check_against_pyjuice(circuit, ns, column=i)
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
        _check_against_pyjuice(circuit, ns)
        _check_marginals(circuit, np.random.default_rng(1))
        full = load_jpc(tmp_path / f"{name}.jpc", simplify=False)
        assert len(full.groups) == len(list(ns)) >= len(circuit.groups)
        _check_against_pyjuice(full, ns)


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
    _check_against_pyjuice(simple, root)
    full = load_jpc(compiled, simplify=False)
    assert len(full.groups) == len(read_jpc_entries(compiled))
    _check_against_pyjuice(full, root)


@pytest.mark.pyjuice
def test_product_block_count_differs_from_first_child(juice, tmp_path):
    # 3 product blocks over children of 2 blocks: pyjuice saves it but its own loader misreads it
    root = _small_pyjuice_circuit(juice, product_edges=[[0, 1], [1, 0], [1, 1]])
    path = tmp_path / "quirk.jpc"
    juice.save(str(path), root)
    circuit = load_jpc(path)
    _check_against_pyjuice(circuit, root)


@pytest.mark.pyjuice
def test_sparse_product_edges(juice, tmp_path):
    edges = [[0, 3], [1, 1], [2, 0], [3, 2], [0, 0], [3, 3]]  # node level, 6 products of 2-blocks
    root = _small_pyjuice_circuit(juice, product_edges=edges, sparse=True)
    path = tmp_path / "sparse.jpc"
    juice.save(str(path), root)
    assert read_jpc_entries(path)[2]["edge_ids"].shape == (6, 2)
    _check_against_pyjuice(load_jpc(path), root)


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


# ---- our circuits into pyjuice ---------------------------------------------------------------

OUR_CIRCUITS = {
    "hmm4": lambda: structures.hmm(4, 4, 3, seed=0),
    "hmm6": lambda: structures.hmm(3, 6, 2, seed=1),
    "hmm3": lambda: structures.hmm(3, 3, 3, seed=2),
    "mixture": mixture_circuit,
    "latent_tree": latent_tree,
    "nested": nested_circuit,
}


@pytest.mark.pyjuice
@pytest.mark.parametrize("name", sorted(OUR_CIRCUITS))
def test_our_circuits_load_in_pyjuice(juice, tmp_path, name):
    ours = OUR_CIRCUITS[name]()
    path = tmp_path / f"{name}.jpc"
    save_jpc(ours, path)
    ns = juice.load(str(path))
    xs = all_assignments(ours)
    np.testing.assert_allclose(pj_eval(ns, xs)[:, 0], evaluate(ours, xs), rtol=1e-5, atol=1e-9)
    tied = sum(getattr(g, "tie_to", None) is not None for g in ours.groups)
    assert sum(n.is_tied() for n in ns) == tied
    if name.startswith("hmm"):
        expected_block = {"hmm4": 4, "hmm6": 2, "hmm3": 1}[name]
        assert {n.block_size for n in ns if n.is_input()} == {expected_block}
    # pyjuice's view of the structure and parameters, saved again by pyjuice, is ours
    juice.save(str(tmp_path / "again.jpc"), ns)
    assert_same_circuit(load_jpc(tmp_path / "again.jpc"), load_jpc(path), atol=1e-6)


@pytest.mark.parametrize("name", sorted(OUR_CIRCUITS))
def test_round_trip_is_identical(tmp_path, name):
    ours = OUR_CIRCUITS[name]()
    for block_size in (1, 32):
        path = tmp_path / f"{name}_{block_size}.jpc"
        save_jpc(ours, path, block_size=block_size)
        back = load_jpc(path)
        assert_same_circuit(back, ours, atol=1e-12)  # float64 copy: exact up to renormalization
        # without our float64 copy the float32 parameters are used
        entries = read_jpc_entries(path)
        for e in entries:
            e.pop("params_float64", None)
        write_entries(tmp_path / "f32.jpc", entries)
        assert_same_circuit(load_jpc(tmp_path / "f32.jpc"), ours, atol=1e-6)


def test_stale_float64_copy_is_ignored(hmm_file, tmp_path):
    entries = read_jpc_entries(hmm_file)
    entries[0]["params_float64"] = np.full_like(entries[0]["params_float64"], 1 / 3)  # disagrees with params
    write_entries(tmp_path / "stale.jpc", entries)
    got = load_jpc(tmp_path / "stale.jpc")
    ref = structures.hmm(4, 4, 3, seed=1)
    np.testing.assert_allclose(params_of(got)[0], params_of(ref)[0], atol=1e-6)


def test_save_multi_root_group_and_load_roots(tmp_path):
    rng = np.random.default_rng(7)
    leaves = [Categorical(v, 2, 2, rng=rng) for v in range(3)]
    top = Sum(Product(*leaves), num_nodes=3, rng=rng)
    save_jpc(top, tmp_path / "multi.jpc")
    circuits = load_jpc_roots(tmp_path / "multi.jpc")
    assert len(circuits) == 3
    for i, c in enumerate(circuits):
        np.testing.assert_allclose(c.root.weights, top.weights[i:i + 1], rtol=0, atol=1e-12)


@pytest.mark.pyjuice
def test_dist_pickle_is_pyjuice_categorical(juice):
    from pyjuice.nodes.distributions import Categorical as PjCategorical
    ours = pickle.loads(categorical_dist_pickle(300))  # trusted: our own bytes
    assert type(ours) is PjCategorical
    assert vars(ours) == vars(PjCategorical(num_cats=300))


def test_reading_and_writing_never_import_pyjuice(hmm_file, tmp_path):
    code = ("import sys; sys.modules['pyjuice'] = None\n"
            "import structures\n"
            f"c = structures.load_jpc({str(hmm_file)!r})\n"
            f"structures.save_jpc(c, {str(tmp_path / 'copy.jpc')!r})\n"
            "assert sys.modules['pyjuice'] is None\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_save_is_atomic(tmp_path, monkeypatch, hmm_file):
    before = hmm_file.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_jpc(latent_tree(), hmm_file)
    monkeypatch.undo()
    assert hmm_file.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hmm.jpc"]


def test_suffix_is_required(tmp_path, hmm_file):
    with pytest.raises(JpcError, match=".jpc suffix"):
        save_jpc(latent_tree(), tmp_path / "model.pkl")
    assert not (tmp_path / "model.pkl").exists()
    os.rename(hmm_file, tmp_path / "hmm.pt")
    with pytest.raises(JpcError, match=".jpc suffix"):
        load_jpc(tmp_path / "hmm.pt")
    with pytest.raises(JpcError, match="power of two"):
        save_jpc(latent_tree(), tmp_path / "x.jpc", block_size=3)


# ---- malicious files -------------------------------------------------------------------------

class _Payload:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _payloads(marker):
    return [
        ("system", _Payload(os.system, (f"touch {marker}",))),
        ("call", _Payload(subprocess.call, (["touch", str(marker)],))),
        ("eval", _Payload(builtins.eval, (f"open({str(marker)!r}, 'w').close()",))),
    ]


@pytest.mark.parametrize("which", ["system", "call", "eval"])
def test_malicious_pickle_is_refused(tmp_path, hmm_file, which):
    marker = tmp_path / "pwned"
    payload = dict(_payloads(marker))[which]
    # at the top level, and hidden inside an otherwise valid node list
    write_entries(tmp_path / "evil.jpc", payload)
    entries = read_jpc_entries(hmm_file)
    entries[2]["params"] = payload
    write_entries(tmp_path / "evil2.jpc", entries)
    for path in ("evil.jpc", "evil2.jpc"):
        with pytest.raises(JpcError, match=f"forbidden global '[a-z.]*{which}'"):
            load_jpc(tmp_path / path)
        assert not marker.exists()


@pytest.mark.parametrize("which", ["system", "call", "eval"])
def test_malicious_nested_dist_is_refused(tmp_path, hmm_file, which):
    marker = tmp_path / "pwned"
    entries = read_jpc_entries(hmm_file)
    entries[0]["dist"] = pickle.dumps(dict(_payloads(marker))[which])
    write_entries(tmp_path / "evil.jpc", entries)
    with pytest.raises(JpcError, match="forbidden global"):
        load_jpc(tmp_path / "evil.jpc")
    assert not marker.exists()


def _opcodes(*parts: bytes) -> bytes:
    return b"\x80\x04" + b"".join(parts) + b"."


def _global(module: str, name: str) -> bytes:
    return (b"\x8c" + bytes([len(module)]) + module.encode() + b"\x8c" + bytes([len(name)]) + name.encode()
            + b"\x93")


def test_unpickler_internals_cannot_be_abused(tmp_path):
    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy 1.x
        from numpy.core.numeric import _frombuffer
    cases = {
        # BUILD with a slot state on an allowed class would modify it
        "modify": _opcodes(_global("numpy", "ndarray"), b"N}\x8c\x01x\x4b\x01s\x86b"),
        # BUILD on an allowed function
        "function": _opcodes(_global("numpy", "dtype"), b"}\x8c\x01x\x4b\x01sb"),
        # object arrays would reach arbitrary objects
        "object": pickle.dumps(np.array([1, "a"], dtype=object), protocol=4),
        # an array claiming far more elements than its bytes
        "huge": pickle.dumps(_Payload(_frombuffer, (bytes(8), np.dtype("f8"), (1 << 20, 1 << 20), "C")),
                             protocol=4),
        "mismatch": pickle.dumps(_Payload(_frombuffer, (bytes(8), np.dtype("f8"), (3,), "C")), protocol=4),
        "other_numpy": pickle.dumps(_Payload(np.load, ("x.npy",)), protocol=4),
        "torch": pickle.dumps(torch.zeros(2)),
    }
    messages = {"modify": "may not modify classes", "function": "may not modify functions",
                "object": "dtype 'O8' is not allowed", "huge": "absurdly large", "mismatch": "needs 24",
                "other_numpy": "forbidden global 'numpy.load'", "torch": "forbidden global 'torch."}
    for name, data in cases.items():
        (tmp_path / f"{name}.jpc").write_bytes(data)
        with pytest.raises(JpcError, match=messages[name]):
            load_jpc(tmp_path / f"{name}.jpc")
    assert "x" not in vars(structures.jpc.safe_pickle._NdarrayToken)


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_other_pickle_protocols(tmp_path, hmm_file, protocol):
    # protocol 5 (Python 3.14's default) stores numpy arrays through numpy's _frombuffer
    entries = read_jpc_entries(hmm_file)
    with open(tmp_path / "p.jpc", "wb") as f:
        pickle.dump(entries, f, protocol=protocol)
    assert_same_circuit(load_jpc(tmp_path / "p.jpc"), load_jpc(hmm_file), atol=0)


def test_deeply_nested_pickle(tmp_path):
    depth = 200_000
    (tmp_path / "deep.jpc").write_bytes(_opcodes(b"]" * depth + b"a" * (depth - 1)))
    with pytest.raises(JpcError, match="entry 0 is a list"):
        load_jpc(tmp_path / "deep.jpc")


# ---- corrupt files ---------------------------------------------------------------------------

def test_truncated_and_non_pickle_files(tmp_path, hmm_file):
    data = hmm_file.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "text": b"hello, this is not a pickle",
             "random": np.random.default_rng(0).bytes(500), "empty": b"",
             "dict": pickle.dumps({"type": "Sum"}), "ints": pickle.dumps([1, 2, 3]), "nolist": pickle.dumps([])}
    for name, blob in cases.items():
        (tmp_path / f"{name}.jpc").write_bytes(blob)
        with pytest.raises(JpcError):
            load_jpc(tmp_path / f"{name}.jpc")
    with pytest.raises(JpcError, match="truncated"):
        load_jpc(tmp_path / "truncated.jpc")
    with pytest.raises(JpcError, match="max_bytes"):
        load_jpc(hmm_file, max_bytes=100)


def _corrupt(entries, kind):
    """Apply one corruption to the node list of ``structures.hmm(4, 4, 3)`` saved by save_jpc."""
    root_sum = len(entries) - 1  # untied, with parameters
    prod = next(i for i, e in enumerate(entries) if e["type"] == "Product")
    s, p = entries[root_sum], entries[prod]
    if kind == "bad type":
        entries[1]["type"] = "Gate"
    elif kind == "string size":
        entries[1]["num_node_blocks"] = "4"
    elif kind == "negative size":
        entries[1]["num_node_blocks"] = -1
    elif kind == "absurd size":
        entries[1]["num_node_blocks"] = 10 ** 12
    elif kind == "block size":
        entries[1]["block_size"] = 3
    elif kind == "child out of range":
        p["chs"] = (0, 99)
    elif kind == "child not earlier":
        entries[0]["type"], entries[0]["chs"] = "Product", (1,)
    elif kind == "product edges out of range":
        p["edge_ids"] = p["edge_ids"] + 5
    elif kind == "product edges shape":
        p["edge_ids"] = np.zeros((3, 2), dtype=np.int64)
    elif kind == "sum edges out of range":
        s["edge_ids"] = s["edge_ids"] + 7
    elif kind == "sum block without edge":
        s["num_node_blocks"] *= 2
    elif kind == "duplicate sum edges":
        s["edge_ids"] = np.concatenate([s["edge_ids"], s["edge_ids"]], axis=1)
        s["params"] = np.concatenate([s["params"], s["params"]])
    elif kind == "sum params shape":
        s["params"] = s["params"][..., :-1]
    elif kind == "negative params":
        s["params"] = -s["params"]
        s.pop("params_float64")
    elif kind == "nan params":
        s["params"] = s["params"] * np.nan
        s.pop("params_float64")
    elif kind == "input params shape":
        entries[0]["params"] = entries[0]["params"][:-1]
    elif kind == "input rows":
        entries[0]["params"] = entries[0]["params"] * 2
        entries[0].pop("params_float64")
    elif kind == "mask shape":
        s["zero_param_mask"] = np.zeros((1, 1, 1), dtype=bool)
    elif kind == "edge dtype":
        p["edge_ids"] = p["edge_ids"].astype(np.float32)
    elif kind == "params not array":
        s["params"] = [[0.5, 0.5]]
    elif kind == "tie wrong type":
        entries[1]["source_node"] = root_sum
    elif kind == "tie out of range":
        entries[1]["source_node"] = 1000
    elif kind == "tie cycle":
        src = entries[1]["source_node"]
        entries[src]["source_node"] = 1
    elif kind == "multivariate scope":
        entries[0]["scope"] = [0, 1]
    elif kind == "dist not bytes":
        entries[0]["dist"] = "Categorical"
    elif kind == "external params":
        s["external_params"] = b"whatever"
    elif kind == "product block size":
        p = entries[len(entries) - 2]  # the top product, under the untied root sum
        p["block_size"], p["num_node_blocks"] = 2, 2
    elif kind == "huge vocabulary":
        for e in entries[:4]:
            e["dist"] = categorical_dist_pickle(1 << 30)
    elif kind == "not a circuit":
        entries[0]["scope"] = [3]  # product of two inputs on variable 3
    else:
        raise AssertionError(kind)


CORRUPTIONS = {
    "bad type": "'type' must be", "string size": "num_node_blocks must be an int",
    "negative size": "num_node_blocks must be an int", "absurd size": "more than this reader allows",
    "block size": "not a power of two", "child out of range": "child index 99 out of range",
    "child not earlier": "out of range", "product edges out of range": "points outside",
    "product edges shape": "rows", "sum edges out of range": "out of range",
    "sum block without edge": "no edge", "duplicate sum edges": "twice", "sum params shape": "params have shape",
    "negative params": "negative", "nan params": "NaN", "input params shape": "params have shape",
    "input rows": "sum to", "mask shape": "zero_param_mask", "edge dtype": "dtype",
    "params not array": "numpy array", "tie wrong type": "tied to entry", "tie out of range": "source_node",
    "tie cycle": "cycle", "multivariate scope": "multivariate", "dist not bytes": "dist",
    "external params": "external_params", "not a circuit": "not decomposable|variables",
    "product block size": "must be equal", "huge vocabulary": "more than this reader allows",
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_entries(tmp_path, kind):
    path = tmp_path / "base.jpc"
    save_jpc(structures.hmm(4, 4, 3, seed=1), path, block_size=1)
    entries = read_jpc_entries(path)
    _corrupt(entries, kind)
    write_entries(tmp_path / "bad.jpc", entries)
    with pytest.raises(JpcError, match=CORRUPTIONS[kind]):
        load_jpc(tmp_path / "bad.jpc")
