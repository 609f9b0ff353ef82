"""Exact queries on a compiled circuit: likelihoods, marginals, samples, MAP."""
from .inference import log_prob, marginals
from .sampling import SampleAndMarginals, map_assignment, sample, sample_and_marginals

__all__ = ["log_prob", "marginals", "sample", "sample_and_marginals", "SampleAndMarginals", "map_assignment"]
