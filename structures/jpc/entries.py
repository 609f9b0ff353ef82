"""The raw entries of a pyjuice ``.jpc`` file: reading them safely and checking their header fields.

A ``.jpc`` is a pickled list of dicts, one per pyjuice node vector, children first and the root
last. Each vector holds ``num_node_blocks * block_size`` nodes (older files say
``num_node_groups`` / ``group_size``, or only ``num_nodes`` with no blocks). :func:`parse_entries`
checks what every entry must have (a type, a size, children that come earlier, a tie source that
is another entry) and leaves the tables (``params``, ``edge_ids``, ``dist``) to
:mod:`structures.jpc.tables`.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import numpy as np

from ..limits import brief, check_count
from .safe_pickle import JpcError, _ArrayState, restricted_loads

#: Files larger than this are refused unless ``max_bytes=`` says otherwise.
DEFAULT_MAX_BYTES = 1 << 31
#: Most entries (node vectors) in one file, and most nodes in one vector.
MAX_ENTRIES = 1 << 20
MAX_NODES_PER_ENTRY = 1 << 24
#: Extra key ``save_jpc`` writes next to the float32 ``params``; pyjuice ignores it.
FLOAT64_KEY = "params_float64"

_TYPES = ("Input", "Product", "Sum")


def check_path(path) -> str:
    """``path`` as a string, refused unless it names a ``.jpc`` file."""
    path = os.fspath(path)
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if not path.endswith(".jpc"):
        raise JpcError(f"{path!r}: a pyjuice circuit file must have the .jpc suffix")
    return path


def _read_bytes(path: str, max_bytes: int) -> bytes:
    """The file's bytes. Only what the size check allowed is ever reserved: ``read(n)`` allocates
    its ``n`` up front, so reading ``max_bytes`` (2 GiB by default) to learn that a file holds
    1.5 KB would fail under an address-space limit."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block, /dev/zero never ends
            raise JpcError(f"{path!r}: not a regular file")
        if info.st_size > max_bytes:
            raise JpcError(f"{path!r}: file has {info.st_size} bytes, more than max_bytes={max_bytes}")
        with open(path, "rb") as f:
            data = f.read(info.st_size)
            grew = f.read(1)
    except OSError as err:
        raise JpcError(f"{path!r}: cannot read ({err})") from err
    if grew or len(data) != info.st_size:
        raise JpcError(f"{path!r}: the file changed while it was read")
    if not data:
        raise JpcError(f"{path!r}: empty file")
    return data


def read_jpc_entries(path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[dict]:
    """The raw list of node dicts of a ``.jpc`` file, unpickled safely (arrays are numpy arrays,
    ``dist`` is still the nested pickle's bytes)."""
    path = check_path(path)
    max_bytes = check_count(max_bytes, "max_bytes", 1, error=JpcError)
    obj = restricted_loads(_read_bytes(path, max_bytes), repr(path))
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


# ---- checked field values -------------------------------------------------------------------

def check_int(value, what: str, low: int = 0, high: int | None = None) -> int:
    """``value`` as a plain int (no bool, no float) in ``[low, high]``."""
    if type(value) is not int or value < low:
        raise JpcError(f"{what} must be an int >= {low}, got {type(value).__name__}"
                       + (f" {brief(value)}" if isinstance(value, (int, float)) else ""))
    if high is not None and value > high:
        raise JpcError(f"{what} = {brief(value)} is more than this reader allows ({high})")
    return value


def check_array(value, what: str, kinds: str) -> np.ndarray:
    """``value`` as a numpy array whose dtype kind is one of ``kinds`` (numpy's letters)."""
    if isinstance(value, _ArrayState):
        value = value.array
    if not isinstance(value, np.ndarray):
        raise JpcError(f"{what} must be a numpy array, got {type(value).__name__}")
    if value.dtype.kind not in kinds:
        raise JpcError(f"{what} has dtype {value.dtype}; expected kind {kinds!r}")
    return value


def check_probabilities(value, what: str) -> np.ndarray:
    """``value`` as a float64 array of finite, non-negative numbers (not necessarily normalized)."""
    arr = check_array(value, what, "f").astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise JpcError(f"{what} contains NaN or infinite values")
    if np.any(arr < 0):
        raise JpcError(f"{what} contains negative values")
    return arr


# ---- entries --------------------------------------------------------------------------------

@dataclass
class Entry:
    """One node vector of the file, with its header fields checked."""

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


def _size(info: dict, where: str) -> tuple[int, int]:
    """(number of blocks, block size) under the current or a legacy key."""
    if "num_node_blocks" in info:
        nb, bs = info["num_node_blocks"], info.get("block_size")
    elif "num_node_groups" in info:  # legacy names
        nb, bs = info["num_node_groups"], info.get("group_size")
    elif "num_nodes" in info:  # legacy: no blocks
        nb, bs = info["num_nodes"], 1
    else:
        raise JpcError(f"{where}: missing 'num_node_blocks'")
    nb = check_int(nb, f"{where}: num_node_blocks", 1, MAX_NODES_PER_ENTRY)
    bs = check_int(bs, f"{where}: block_size", 1, MAX_NODES_PER_ENTRY)
    if bs & (bs - 1):
        raise JpcError(f"{where}: block_size {bs} is not a power of two")
    if nb * bs > MAX_NODES_PER_ENTRY:
        raise JpcError(f"{where}: {nb} x {bs} nodes is more than this reader allows ({MAX_NODES_PER_ENTRY})")
    return nb, bs


def _children(info: dict, kind: str, i: int, where: str) -> tuple[int, ...]:
    chs = info.get("chs", ())
    if not isinstance(chs, (tuple, list)):
        raise JpcError(f"{where}: 'chs' must be a tuple of entry indices")
    for c in chs:
        if type(c) is not int or not 0 <= c < i:
            raise JpcError(f"{where}: child index {brief(c) if type(c) is int else type(c).__name__} out of range "
                           f"(children must be earlier entries, 0..{i - 1})")
    if kind == "Input" and chs:
        raise JpcError(f"{where}: an input has no children")
    if kind != "Input" and not chs:
        raise JpcError(f"{where}: has no children")
    return tuple(chs)


def parse_entries(raw: list[dict]) -> list[Entry]:
    """Check the header fields of every raw entry (tables are checked when they are read)."""
    entries = []
    for i, info in enumerate(raw):
        kind = info.get("type")
        if not isinstance(kind, str) or kind not in _TYPES:  # an array's == would not give one bool
            raise JpcError(f"entry {i}: 'type' must be one of {_TYPES}, got {brief(kind)}")
        where = f"entry {i} ({kind})"
        nb, bs = _size(info, where)
        chs = _children(info, kind, i, where)
        if info.get("external_params") is not None:
            raise JpcError(f"{where}: sum nodes with external_params are not supported")
        source = info.get("source_node")
        if source is not None:
            if type(source) is not int or not 0 <= source < len(raw) or source == i:
                raise JpcError(f"{where}: source_node {brief(source)} is not another entry's index")
        entries.append(Entry(i, kind, nb, bs, chs, info, source))
    return entries
