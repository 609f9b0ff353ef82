"""Hostile sizes, from files and from arguments: each is refused with an error naming the field or
argument BEFORE anything of that size is allocated, and no error message formats an untrusted value
without bound.

The cases that would allocate without bound on a defect run in one child process under an
address-space limit (:mod:`helpers.limited`): there a defect is a MemoryError, not a dead machine.
"""
from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest

import structures
from helpers.jpc_files import write_entries
from helpers.limited import run_limited
from structures import Categorical, Circuit, JpcError, StructureError, Sum, load_jpc, save_jpc
from structures.jpc import read_jpc_entries
from structures.limits import MAX_VARIABLES, brief


def _one_input_file(folder) -> str:
    path = folder / "one.jpc"
    save_jpc(Circuit(Sum(Categorical(0, 2, 3), num_nodes=1)), path, block_size=1)
    return str(path)


def _hostile_files(folder) -> dict[str, str]:
    """The files the limited cases read (paths by name)."""
    small = _one_input_file(folder)
    entries = read_jpc_entries(small)
    entries[0]["scope"] = [2 ** 40]
    write_entries(folder / "scope.jpc", entries)
    os.symlink("/dev/zero", folder / "zero.jpc")
    # LONG_BINPUT 2**31 - 1: the C unpickler zero-fills a 16 GiB memo for it
    (folder / "memo.jpc").write_bytes(b"\x80\x04N" + b"r" + struct.pack("<I", 2 ** 31 - 1) + b".")
    # BINBYTES8 of 2**40 bytes, of which 2 are there: the C unpickler reserves the terabyte first
    (folder / "bytes.jpc").write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"ab.")
    return {name: str(folder / f"{name}.jpc") for name in ("one", "scope", "zero", "memo", "bytes")}


def _expect(error: str, pattern: str, code: str) -> str:
    """A case's code: ``code`` must raise ``error`` (by name) with ``pattern`` in its message."""
    return (f"import re, numpy as np, torch, structures\nfrom structures import *\n"
            f"try:\n    {code}\nexcept {error} as err:\n"
            f"    assert re.search({pattern!r}, str(err)), str(err)\n"
            f"else:\n    raise AssertionError('no error')\n")


def _cases(files: dict[str, str]) -> dict[str, str]:
    padded = "Sum(Product(Categorical(0, 1, 1 << 22), *[Categorical(v, 1, 2) for v in range(1, 300)]), num_nodes=1)"
    return {
        "jpc scope": _expect("JpcError", r"entry 0 \(Input\): scope variable \d+ is out of range",
                             f"load_jpc({files['scope']!r})"),
        "api scope": _expect("StructureError", r"var = 1099511627776 is more than the limit",
                             "Circuit(Sum(Categorical(2**40, 2, 3), num_nodes=1))"),
        "api scope below the cap": _expect("StructureError", r"variables must be 0..n-1; no input group covers "
                                           r"variable\(s\) \[0\]",
                                           f"Circuit(Sum(Categorical({MAX_VARIABLES - 1}, 2, 3), num_nodes=1))"),
        "small file": f"import structures\nstructures.load_jpc({files['one']!r})",
        "dev zero": _expect("JpcError", "not a regular file", f"load_jpc({files['zero']!r})"),
        "memo bomb": _expect("JpcError", "found NoneType", f"load_jpc({files['memo']!r})"),
        "bytes bomb": _expect("JpcError", "truncated", f"load_jpc({files['bytes']!r})"),
        "hmm length": _expect("StructureError", r"hmm: length = 1000000000 is more than the limit",
                              "structures.hmm(10**9, 2, 2)"),
        "hmm states": _expect("StructureError", r"hmm: with length=4, num_states=1048576, vocab=2, one parameter "
                              "table needs", "structures.hmm(4, 2**20, 2)"),
        "compile padding": _expect("ValueError", r"compile: the circuit's parameter tables \(input tables padded "
                                   r"to the largest vocabulary, 4194304\) needs", f"compile(Circuit({padded}))"),
        "num_samples": _expect("ValueError", r"num_samples x batch = 1000000000000 x 1 rows",
                               "compile(hmm(4, 2, 2)).sample(num_samples=10**12)"),
        "mutual information": _expect("ValueError", r"mutual_information: one-hot .* vocab 1000000",
                                      "mutual_information(np.zeros((10, 4), dtype=int), vocab=10**6)"),
        "chow-liu columns": _expect("ValueError", r"chow_liu_tree: data has 3000 columns",
                                    "chow_liu_tree(np.zeros((2, 3000), dtype=int), vocab=2)"),
    }


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """Every memory case, run once in a child under an address-space limit: {case: (error, message)}."""
    return run_limited(_cases(_hostile_files(tmp_path_factory.mktemp("hostile"))))


# ----------------------------------------------------------------------------- 1a. variable indices
def test_huge_scope_variable_in_a_file_is_refused_cheaply(limited):
    assert limited["jpc scope"] == ("ok", "")


def test_huge_variable_through_the_api_is_refused_cheaply(limited):
    assert limited["api scope"] == ("ok", "")
    assert limited["api scope below the cap"] == ("ok", "")


# ----------------------------------------------------------------------------- 1b. reading a small file
def test_small_file_loads_under_an_address_space_limit(limited):
    assert limited["small file"] == ("ok", "")


# ----------------------------------------------------------------------------- siblings of 1a/1b
def test_reader_refuses_devices_and_pickle_bombs_before_allocating(limited):
    for case in ("dev zero", "memo bomb", "bytes bomb"):
        assert limited[case] == ("ok", ""), case


def test_builders_compile_and_sample_check_sizes_before_allocating(limited):
    for case in ("hmm length", "hmm states", "compile padding", "num_samples", "mutual information",
                 "chow-liu columns"):
        assert limited[case] == ("ok", ""), case


# ----------------------------------------------------------------------------- 1c. nesting and messages
def _deep_list(depth: int) -> bytes:
    """Pickle opcodes of a list nested ``depth`` deep (pickle.dumps itself would recurse)."""
    return b"]" * depth + b"a" * (depth - 1)


def _huge_int(value: int) -> bytes:
    payload = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8b" + struct.pack("<i", len(payload)) + payload              # LONG4


_MARKER = "HOSTILE-PLACEHOLDER"


def _spliced(hmm_file, key: str, ops: bytes) -> bytes:
    """The node list of ``hmm_file`` with field ``key`` of a fitting entry set to the object the
    pickle opcodes ``ops`` build. Protocol 3 has no frames, so the opcodes can replace a marker."""
    entries = read_jpc_entries(hmm_file)
    index = next(i for i, e in enumerate(entries) if key in e and (key != "chs" or e["chs"]))
    if key == "source_node":
        index = next(i for i, e in enumerate(entries) if e["type"] != "Product")
    entries[index][key] = [_MARKER] if key == "scope" else _MARKER
    data = pickle.dumps(entries, protocol=3)
    marker = b"X" + struct.pack("<I", len(_MARKER)) + _MARKER.encode()        # BINUNICODE
    assert data.count(marker) == 1
    return data.replace(marker, ops)


@pytest.mark.parametrize("key", ["type", "source_node", "num_node_blocks", "chs", "scope", "dist", "params"])
def test_deep_nesting_gives_a_one_line_error(tmp_path, hmm_file, key):
    path = tmp_path / "deep.jpc"
    path.write_bytes(_spliced(hmm_file, key, _deep_list(100_000)))
    with pytest.raises(JpcError) as info:
        load_jpc(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message


@pytest.mark.parametrize("key", ["num_node_blocks", "source_node", "scope"])
def test_huge_int_fields_are_described_by_their_size(tmp_path, hmm_file, key):
    """str() of an int of 5,000 digits raises a plain ValueError of its own (Python >= 3.11)."""
    (tmp_path / "big.jpc").write_bytes(_spliced(hmm_file, key, _huge_int(10 ** 5000)))
    with pytest.raises(JpcError, match=f"{key if key != 'scope' else 'scope variable'}.*<an int of 16610 bits>"):
        load_jpc(tmp_path / "big.jpc")


def test_array_type_field_is_refused(tmp_path, hmm_file):
    entries = read_jpc_entries(hmm_file)
    entries[1]["type"] = np.array([1, 2])             # == "Sum" would be an array, not a bool
    write_entries(tmp_path / "bad.jpc", entries)
    with pytest.raises(JpcError, match="'type' must be one of"):
        load_jpc(tmp_path / "bad.jpc")


def test_brief_bounds_every_description():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    for value in (deep, "x" * 10 ** 6, b"\0" * 10 ** 6, 10 ** 5000, {"k": 10 ** 5000}, np.zeros(10 ** 5)):
        text = brief(value)
        assert len(text) <= 80 and "\n" not in text.replace("\n", "") and text


# ----------------------------------------------------------------------------- 3. sibling arguments
def test_reader_and_writer_arguments_are_checked(tmp_path, hmm_file):
    with pytest.raises(JpcError, match="max_bytes must be a positive int"):
        load_jpc(hmm_file, max_bytes="2GB")
    with pytest.raises(JpcError, match=r"block_size = 1099511627776 is more than the largest node vector"):
        save_jpc(structures.hmm(3, 2, 2), tmp_path / "x.jpc", block_size=2 ** 40)
    assert not (tmp_path / "x.jpc").exists()


# sizes far beyond any machine's memory, so that on a defect numpy refuses at once instead of filling RAM
SIZE_CASES = {
    "input table": (lambda: Categorical(0, 2 ** 20, 2 ** 20), r"a \[1048576, 1048576\] table needs"),
    "num_nodes": (lambda: Categorical(0, 2 ** 40, 2), r"num_nodes = 1099511627776 is more than the limit"),
    "vocab": (lambda: Categorical(0, 1, 2 ** 40), r"vocab = 1099511627776 is more than the limit"),
    "sum table": (lambda: Sum(Categorical(0, 2 ** 20, 1), num_nodes=2 ** 20), r"a \[1048576, 1048576\] weight table"),
    "bool size": (lambda: Categorical(0, True, 2), "num_nodes must be a positive int, got True"),
    "chain span": (lambda: structures.hidden_chain(4, 2, 3, span=0), "hidden_chain: span must be a positive int"),
    "components": (lambda: structures.mixture_emitter(0), "mixture_emitter: components must be a positive int"),
    "tree tables": (lambda: structures.latent_tree(__import__("networkx").path_graph(3), 2 ** 20, 2),
                    r"latent_tree: with 3 positions, num_states=1048576, vocab=2, one parameter table needs"),
}


@pytest.mark.parametrize("case", list(SIZE_CASES))
def test_size_arguments_are_checked_before_allocating(case):
    build, message = SIZE_CASES[case]
    with pytest.raises(StructureError, match=message):
        build()


def test_mutual_information_with_zero_pseudocount_has_no_nan():
    data = np.array([[0, 0, 1], [1, 1, 1], [0, 0, 1]])
    mi = structures.mutual_information(data, vocab=2, pseudocount=0.0)
    assert np.all(np.isfinite(mi)) and mi[0, 1] == pytest.approx(np.log(3) - 2 / 3 * np.log(2))
    with pytest.raises(ValueError, match="pseudocount must be >= 0 and finite"):
        structures.mutual_information(data, vocab=2, pseudocount=float("inf"))


def test_semiring_names_are_checked_without_hashing():
    model = structures.compile(structures.hmm(3, 2, 2))
    with pytest.raises(ValueError, match="semiring must be 'sum' or 'max'.*got a list"):
        model.upward(model.evidence(), semiring=[1])


def test_load_jpc_roots_caps_the_number_of_circuits(tmp_path):
    """A few hundred bytes (parameters left uniform) may declare thousands of roots: each would be a
    validated Circuit of its own."""
    from structures.jpc.reader import MAX_ROOTS
    from structures.jpc.dist_pickle import categorical_dist_pickle
    roots = MAX_ROOTS + 1
    write_entries(tmp_path / "roots.jpc", [
        {"type": "Input", "num_node_blocks": 1, "block_size": 1, "chs": (), "scope": [0],
         "dist": categorical_dist_pickle(2), "params": np.array([0.5, 0.5], dtype=np.float32)},
        {"type": "Sum", "num_node_blocks": roots, "block_size": 1, "chs": (0,),
         "edge_ids": np.stack([np.arange(roots), np.zeros(roots, dtype=np.int64)])}])
    with pytest.raises(JpcError, match=f"the root vector has {roots} root nodes, more than load_jpc_roots builds"):
        structures.load_jpc_roots(tmp_path / "roots.jpc", missing_params="uniform")
    assert structures.load_jpc(tmp_path / "roots.jpc", root=7, missing_params="uniform").num_vars == 1
