"""Exact queries on a compiled circuit: likelihoods, marginals, samples, MAP. Each is a function of
the engine and the evidence; :class:`structures.CompiledCircuit` offers them as methods."""
from .evidence import make_evidence
from .inference import log_prob, marginals
from .sampling import SampleAndMarginals, map_assignment, sample, sample_and_marginals

__all__ = ["make_evidence", "log_prob", "marginals", "sample", "sample_and_marginals", "SampleAndMarginals",
           "map_assignment"]
