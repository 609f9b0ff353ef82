"""Resolving pyjuice's parameter ties (``source_node``) between ``.jpc`` entries.

An entry with a ``source_node`` shares the parameters of that entry, which may itself point on
(and, in files pyjuice writes, may come later in the list). :func:`tie_sources` follows every
chain to the entry that holds the parameters and checks that the two can share them: same kind,
same size, same number of categories (inputs), same children sizes and edges (sums).
"""
from __future__ import annotations

import numpy as np

from .entries import Entry
from .safe_pickle import JpcError
from .tables import EntryTables


def tie_sources(tables: EntryTables) -> list[int]:
    """For every entry, the index of the entry whose parameters it uses (its own if untied)."""
    root_of: dict[int, int] = {}  # memo of resolved chains, so long chains cost linear time
    return [_tie_source(tables, e, root_of) for e in tables.entries]


def _tie_source(tables: EntryTables, e: Entry, root_of: dict[int, int]) -> int:
    if e.source is None or e.kind == "Product":  # products have no parameters to share
        return e.index
    path, on_path, cur = [], set(), e
    while cur.source is not None and cur.index not in root_of:
        if cur.index in on_path:
            raise JpcError(f"{e.label}: source_node references form a cycle")
        path.append(cur.index)
        on_path.add(cur.index)
        nxt = tables.entries[cur.source]
        if nxt.kind != e.kind:
            raise JpcError(f"{cur.label}: tied to entry {nxt.index}, which is a {nxt.kind}")
        cur = nxt
    src = tables.entries[root_of.get(cur.index, cur.index)]
    for i in path:
        root_of[i] = src.index
    if (src.num_blocks, src.block_size) != (e.num_blocks, e.block_size):
        raise JpcError(f"{e.label}: tied to entry {src.index} of a different size "
                       f"({src.num_blocks}x{src.block_size} vs {e.num_blocks}x{e.block_size})")
    if e.kind == "Input":
        if tables.input_dist(src)[1] != tables.input_dist(e)[1]:
            raise JpcError(f"{e.label}: tied to entry {src.index} with a different number of categories")
    else:
        if tables.sum_shape(src) != tables.sum_shape(e):
            raise JpcError(f"{e.label}: tied to entry {src.index} whose children differ in size")
        if not np.array_equal(tables.sum_edges(src), tables.sum_edges(e)):
            raise JpcError(f"{e.label}: tied to entry {src.index} but its edge_ids differ from the source's")
    return src.index
