"""Exact queries on a compiled circuit: likelihoods, marginals, samples, MAP."""
from .inference import log_prob, marginals
from .sampling import map_assignment, sample

__all__ = ["log_prob", "marginals", "sample", "map_assignment"]
