"""Decoding: the semi-autoregressive loop (:func:`generate`), one step on one block
(:class:`BlockDecoder`: factorized, joint or any-order proposals from the CoDD layer) and the
schedule of how many positions a step commits. The rules that rank positions live with the
distribution, in :mod:`pcdiff.codd.rules`."""
from .generate import denoise, generate
from .schedule import commit_count, per_row_counts, select_top, split_evenly
from .step import CODD_MODES, BlockDecoder

__all__ = ["generate", "denoise", "BlockDecoder", "CODD_MODES", "split_evenly", "per_row_counts", "select_top",
           "commit_count"]
