"""Malicious ``.jpc`` files: pickles that try to run code or abuse the restricted unpickler."""
from __future__ import annotations

import builtins
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch

import structures
from helpers.jpc_files import IGNORE_SPARSE_WARNING, assert_same_circuit, write_entries
from structures import JpcError, load_jpc
from structures.jpc import read_jpc_entries

pytestmark = IGNORE_SPARSE_WARNING


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
