"""Mixtures of whole circuits."""
from __future__ import annotations

import numpy as np

from ..circuit import Circuit
from ..limits import brief
from ..nodes import StructureError, Sum


def mixture(*circuits: Circuit, weights=None, seed: int | None = 0) -> Circuit:
    """The mixture Σ_j w_j · C_j of circuits over the same variables (uniform weights by default)."""
    if not circuits:
        raise StructureError("mixture: needs at least one circuit")
    for c in circuits:
        if not isinstance(c, Circuit):
            raise StructureError(f"mixture: {brief(c)} is not a Circuit")
    if weights is None:
        weights = np.full((1, len(circuits)), 1.0 / len(circuits))
    else:
        weights = np.asarray(weights, dtype=np.float64).reshape(1, -1)
    return Circuit(Sum(*[c.root for c in circuits], num_nodes=1, weights=weights, name="mixture"))
