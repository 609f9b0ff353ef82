"""structures: the circuit core of pcdiff.

symbolic node groups → :class:`Circuit` (validated) → :func:`compile` (tensor layout, an
``nn.Module``: :mod:`structures.compile`) → exact batched queries (``log_prob``, ``marginals``,
``sample``, ``map``: :mod:`structures.queries`) on a :class:`CompiledCircuit`.
This package never imports :mod:`pcdiff`.
"""
from .circuit import Circuit
from .nodes import Categorical, NodeGroup, Product, StructureError, Sum
from .library import (chow_liu_tree, factorized_emitter, hclt, hidden_chain, hmm, latent_tree, mixture,
                      mixture_emitter, mutual_information, permutation, all_different, latin_square)
from .types import CandidateEvidence, Evidence, LogParams
from .logspace import gumbel_argmax, gumbel_noise
from .compiled import CompiledCircuit, compile
from .learn import em_step, expected_counts, fit
from .jpc import JpcError, load_jpc, load_jpc_roots, save_jpc

__all__ = [
    "Circuit", "Categorical", "NodeGroup", "Product", "StructureError", "Sum",
    "CandidateEvidence", "CompiledCircuit", "Evidence", "LogParams", "compile", "gumbel_argmax", "gumbel_noise",
    "hmm", "hidden_chain", "factorized_emitter", "mixture_emitter", "latent_tree", "chow_liu_tree", "hclt",
    "mutual_information", "mixture", "permutation", "all_different", "latin_square",
    "em_step", "expected_counts", "fit",
    "JpcError", "load_jpc", "load_jpc_roots", "save_jpc",
]
