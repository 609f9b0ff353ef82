"""The compiler's back end: a symbolic circuit laid out as tensors (:mod:`.layout`), its parameter
tables (:mod:`.tables`), the log-space kernels and semirings, and the upward pass, held together by
:class:`CircuitEngine` (an ``nn.Module``). The queries (:mod:`structures.queries`) run on it."""
from .engine import CircuitEngine
from .layout import Layout, build_layout
from .semiring import MAX_PRODUCT, SUM_PRODUCT, Semiring, semiring
from .tables import CategoricalTable, PassTables

__all__ = ["CircuitEngine", "Layout", "build_layout", "Semiring", "SUM_PRODUCT", "MAX_PRODUCT", "semiring",
           "CategoricalTable", "PassTables"]
