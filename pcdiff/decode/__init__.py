"""Decoding: the semi-autoregressive loop (:func:`generate`), uniform-noise canvas decoding
(:func:`generate_canvas`, DiffusionGemma's loop with or without CoDD), one step on one block
(:class:`BlockDecoder`: factorized, joint or any-order proposals from the CoDD layer, or the product
with an autoregressive model), the schedule of how many positions a step commits (LLaDA's count,
Fast-dLLM's threshold, the EB-sampler's entropy bound) and ReMDM's remasking. The rules that rank
positions live with the distribution, in :mod:`pcdiff.codd.rules`."""
from .canvas import CanvasResult, generate_canvas
from .generate import DecodeCalls, denoise, generate
from .schedule import commit_count, entropy_bound_count, per_row_counts, select_top, split_evenly
from .step import CODD_MODES, DECODER_MODES, BlockDecoder

__all__ = ["generate", "denoise", "DecodeCalls", "BlockDecoder", "CODD_MODES", "DECODER_MODES", "split_evenly",
           "per_row_counts", "select_top", "commit_count", "entropy_bound_count",
           "generate_canvas", "CanvasResult"]
