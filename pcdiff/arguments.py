"""The rules every entry point of pcdiff checks its numbers and flags with: one definition of "an
int" (a bool is not one), "a finite number" and "a flag" (a truthy string such as "False" is not
one), each error naming the argument, an option or a file's field."""
from __future__ import annotations

import math
import numbers

__all__ = ["is_int", "check_int", "check_number", "check_flag"]


def is_int(value) -> bool:
    """An int (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value, least: int = 0, most: int | None = None, optional: bool = False):
    """``value`` if it is an int in [least, most] (or None when ``optional``); else a ValueError naming ``name``."""
    if optional and value is None:
        return value
    if not is_int(value) or value < least or (most is not None and value > most):
        bound = f">= {least}" if most is None else f"in [{least}, {most}]"
        raise ValueError(f"{name} must be an int {bound}{' or None' if optional else ''}, got {value!r}")
    return value


def check_number(name: str, value, least: float = 0.0, strict: bool = True, most: float | None = None,
                 optional: bool = False):
    """``value`` if it is a finite number above ``least`` (at least ``least`` unless ``strict``) and at
    most ``most``; else a ValueError naming ``name``."""
    if optional and value is None:
        return value
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > least if strict else value >= least) and (most is None or value <= most)
    if not ok:
        bound = f"{'>' if strict else '>='} {least:g}" + ("" if most is None else f" and <= {most:g}")
        raise ValueError(f"{name} must be a finite number {bound}{' or None' if optional else ''}, got {value!r}")
    return value


def check_flag(name: str, value) -> bool:
    """``value`` if it is True or False: a truthy string such as "False" must not silently mean True."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value
