"""The compiled circuit's parameters and the per-pass forms of them.

A :class:`CategoricalTable` is one trainable table of distributions (a sum group's weights or an
input group's emissions): unconstrained logits, and the support mask of its structural zeros.
:class:`PassTables` caches, for one pass, each table in the forms the kernels ask for.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..types import LogParams
from .kernels import WeightTable

__all__ = ["CategoricalTable", "PassTables"]


class CategoricalTable(nn.Module):
    """Rows of probabilities ``probs`` [K, C] as ``logits`` (an ``nn.Parameter``) and ``support``.

    Zero-probability entries are structural: excluded by the support mask, kept at a finite logit
    so that optimizers never see -inf. :meth:`normalized` gives the log-probabilities.
    """

    def __init__(self, probs: np.ndarray, dtype: torch.dtype):
        super().__init__()
        probs = np.asarray(probs)
        support = torch.from_numpy(probs > 0)
        with np.errstate(divide="ignore"):
            logits = torch.from_numpy(np.log(probs)).to(dtype)
        self.logits = nn.Parameter(torch.where(support, logits, torch.zeros_like(logits)))
        self.register_buffer("support", support)
        # tables without structural zeros skip the masking in every pass
        self.full_support = bool(support.all())

    def normalized(self) -> torch.Tensor:
        """Log-probabilities [K, C], -inf outside the support (differentiable w.r.t. the logits)."""
        if self.full_support:
            return torch.log_softmax(self.logits, dim=-1)
        return torch.log_softmax(self.logits.masked_fill(~self.support, float("-inf")), dim=-1)

    @torch.no_grad()
    def load(self, log_probs: torch.Tensor) -> None:
        """Set the logits so that :meth:`normalized` returns ``log_probs``."""
        # A zero inside the support (an EM count of zero) must stay a zero after the softmax: the
        # most negative finite logit, not 0 (which would give it the weight of a likely entry).
        # Entries outside the support are masked anyway.
        self.logits.copy_(torch.where(torch.isfinite(log_probs), log_probs,
                                      torch.full_like(log_probs, torch.finfo(log_probs.dtype).min)))


class PassTables:
    """Per-pass cache of the parameter tables in the forms the kernels need."""

    def __init__(self, log_params: LogParams):
        self.log_params = log_params
        self._sums: dict[int, WeightTable] = {}
        self._inputs: dict[int, WeightTable] = {}

    def sum(self, t: int) -> WeightTable:
        if t not in self._sums:
            self._sums[t] = WeightTable(self.log_params.sums[t])
        return self._sums[t]

    def input(self, t: int) -> WeightTable:
        if t not in self._inputs:
            self._inputs[t] = WeightTable(self.log_params.inputs[t])
        return self._inputs[t]
