"""Builders: functions that return a validated :class:`~structures.Circuit`."""
from .chain import factorized_emitter, hidden_chain, mixture_emitter
from .hmm import hmm
from .mixture import mixture
from .constraints import all_different, latin_square, permutation
from .tree import chow_liu_tree, hclt, latent_tree, mutual_information

__all__ = ["hmm", "hidden_chain", "factorized_emitter", "mixture_emitter", "latent_tree", "chow_liu_tree",
           "hclt", "mutual_information", "mixture", "permutation", "all_different", "latin_square"]
