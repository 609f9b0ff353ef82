"""Corrupt ``.jpc`` files: every malformed field is refused with a JpcError that names it."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import structures
from helpers.jpc_files import IGNORE_SPARSE_WARNING, write_entries
from structures import JpcError, load_jpc, save_jpc
from structures.jpc import read_jpc_entries
from structures.jpc.dist_pickle import categorical_dist_pickle

pytestmark = IGNORE_SPARSE_WARNING


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
