"""The largest sizes the core accepts, the one check every size goes through, and how error messages
describe values that came from outside (arguments, files).

Every size read from an argument or a file (a variable index, a vocabulary, a node count, a table
shape, a number of groups a builder would create) is checked here BEFORE anything of that size is
allocated: a hostile or mistyped size is then an error that names it, never memory exhaustion.
The limits are far above what the library is used for; raise them here if a real model needs more.

Error messages never ``repr`` an outside value in full: :func:`brief` bounds the text (a list
nested 100,000 deep, a 1 GB string and an int of a million digits are each a few dozen characters),
and never raises while describing one.
"""
from __future__ import annotations

import reprlib

import numpy as np

__all__ = ["MAX_VARIABLES", "MAX_VOCAB", "MAX_NODES", "MAX_TABLE_ENTRIES", "MAX_GROUPS", "MAX_TOTAL_ENTRIES",
           "brief", "check_count", "check_entries", "check_plan"]

#: Variables (positions) of a circuit: an input group's variable index is below this.
MAX_VARIABLES = 1 << 24
#: Vocabulary size of one variable.
MAX_VOCAB = 1 << 24
#: Nodes in one node group.
MAX_NODES = 1 << 24
#: Entries of one parameter table ([num_nodes, vocab] or [num_nodes, child nodes]): 2 GiB as float64.
MAX_TABLE_ENTRIES = 1 << 28
#: Node groups one builder call may create.
MAX_GROUPS = 1 << 20
#: Entries of all the tables (or intermediate arrays) of one builder call or compiled circuit.
MAX_TOTAL_ENTRIES = 1 << 30

#: Longest description of an outside value in an error message.
BRIEF_CHARS = 80
#: Ints with more digits than this are described by their size (``str`` of a huge int is slow,
#: and above 4,300 digits Python refuses it with a ValueError of its own).
_BRIEF_DIGITS = 24

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 40, 40, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6


def brief(value, limit: int = BRIEF_CHARS) -> str:
    """A bounded description of ``value`` for an error message; never raises."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = int(value)
        if abs(value) < 10 ** _BRIEF_DIGITS:
            return str(value)
        return f"{'-' if value < 0 else ''}<an int of {value.bit_length()} bits>"
    if isinstance(value, (bytes, bytearray, memoryview)):  # reprlib would repr these in full
        return f"<{type(value).__name__} of {len(value)} bytes>"
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - describing a value must never fail (a huge int deep inside, ...)
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_count(value, what: str, low: int = 1, high: int | None = None, error: type = ValueError) -> int:
    """``value`` as an int in ``[low, high]``; else ``error`` naming ``what`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        kind = {0: "a non-negative int", 1: "a positive int"}.get(low, f"an int >= {low}")
        raise error(f"{what} must be {kind}, got {brief(value)}")
    if high is not None and value > high:
        raise error(f"{what} = {brief(value)} is more than the limit {high} (structures.limits)")
    return int(value)


def check_entries(count: int, what: str, limit: int = MAX_TABLE_ENTRIES, error: type = ValueError) -> None:
    """Refuse, naming ``what``, an allocation of ``count`` entries above ``limit``."""
    if count > limit:
        raise error(f"{what} needs {brief(count)} entries, more than the limit {limit} (structures.limits)")


def check_plan(caller: str, *, groups: int, largest_table: int, total_entries: int, sizes: str,
               error: type = ValueError) -> None:
    """A builder's plan, before it builds anything: the node groups it would create, its largest
    parameter table and all its tables together; ``sizes`` names the arguments that set them."""
    if groups > MAX_GROUPS:
        raise error(f"{caller}: {sizes} would create {brief(groups)} node groups, more than the limit "
                    f"{MAX_GROUPS} (structures.limits)")
    check_entries(largest_table, f"{caller}: with {sizes}, one parameter table", MAX_TABLE_ENTRIES, error)
    check_entries(total_entries, f"{caller}: with {sizes}, all the parameter tables", MAX_TOTAL_ENTRIES, error)
