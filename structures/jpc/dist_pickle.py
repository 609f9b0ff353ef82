"""Writing the nested ``dist`` pickle of a pyjuice Categorical input, opcode by opcode, so that
pyjuice need not be imported to save a ``.jpc`` (the reading side is :mod:`.safe_pickle`)."""
from __future__ import annotations

import pickle
import struct

from .safe_pickle import CATEGORICAL_MODULE, JpcError

__all__ = ["categorical_dist_pickle"]


def _unicode_op(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) < 256:
        return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def _int_op(value: int) -> bytes:
    if 0 <= value < 256:
        return pickle.BININT1 + bytes([value])
    if 0 <= value < 65536:
        return pickle.BININT2 + struct.pack("<H", value)
    if -(1 << 31) <= value < (1 << 31):
        return pickle.BININT + struct.pack("<i", value)
    raise JpcError(f"integer {value} too large for a distribution state")


def categorical_dist_pickle(num_cats: int) -> bytes:
    """The pickle of ``pyjuice.nodes.distributions.categorical.Categorical(num_cats)``, written
    opcode by opcode (protocol 4) so that pyjuice need not be imported."""
    out = [pickle.PROTO + bytes([4]),
           _unicode_op(CATEGORICAL_MODULE), _unicode_op("Categorical"), pickle.STACK_GLOBAL,
           pickle.EMPTY_TUPLE, pickle.NEWOBJ,
           pickle.EMPTY_DICT, pickle.MARK]
    for key in ("post_fw_fns", "post_bp_fns", "sampling_fns"):
        out += [_unicode_op(key), pickle.EMPTY_LIST]
    out += [_unicode_op("num_cats"), _int_op(int(num_cats)), pickle.SETITEMS, pickle.BUILD, pickle.STOP]
    return b"".join(out)
