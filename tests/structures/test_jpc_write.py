"""Writing our circuits as ``.jpc`` files: pyjuice loads them, we load them back exactly, safely."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import structures
from helpers.brute import all_assignments, evaluate
from helpers.jpc_files import (IGNORE_SPARSE_WARNING, assert_same_circuit, latent_tree, mixture_circuit,
                               nested_circuit, params_of, pj_eval, write_entries)
from structures import Categorical, JpcError, Product, Sum, load_jpc, load_jpc_roots, save_jpc
from structures.jpc import read_jpc_entries
from structures.jpc.dist_pickle import categorical_dist_pickle

pytestmark = IGNORE_SPARSE_WARNING


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
