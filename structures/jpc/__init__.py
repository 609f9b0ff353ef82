"""pyjuice ``.jpc`` interop: :func:`load_jpc` / :func:`load_jpc_roots` read a file saved by
``juice.save`` into our :class:`~structures.Circuit` (safely, without importing pyjuice), and
:func:`save_jpc` writes one that ``juice.load`` accepts.

The format, the pyjuice quirks handled and the choices made are described in
:mod:`structures.jpc.reader` (with :mod:`~structures.jpc.entries`, :mod:`~structures.jpc.tables`
and :mod:`~structures.jpc.ties`), :mod:`structures.jpc.writer` and :mod:`structures.jpc.safe_pickle`.
"""
from .reader import load_jpc, load_jpc_roots, read_jpc_entries
from .safe_pickle import JpcError
from .writer import save_jpc

__all__ = ["JpcError", "load_jpc", "load_jpc_roots", "read_jpc_entries", "save_jpc"]
