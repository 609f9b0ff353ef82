"""A small causal (left-to-right) transformer: the autoregressive model whose conditionals
p_AR(x_i | x_<i) the decoder mixes with a diffusion backbone's marginals (``codd="ar_product"``, the
auxiliary model of APD). Trained by :func:`pcdiff.train.train_autoregressive`."""
from __future__ import annotations

from .tiny import TinyDiffusionTransformer

__all__ = ["TinyCausalTransformer"]


class TinyCausalTransformer(TinyDiffusionTransformer):
    """Causal pre-norm transformer with learned positions over sequences of up to ``block_length``
    tokens: the same blocks, sizes and parameters as :class:`~pcdiff.backbones.TinyDiffusionTransformer`,
    with causal attention.

    It meets the :class:`~pcdiff.backbones.Backbone` contract with one promise more: ``logits[:, i]``
    is p_AR(x_i | x_<i), computed from the tokens before i only. The input is shifted right by one
    behind a start symbol, the mask id (whose embedding row exists already), so position i never reads
    its own token or a later one: a mask id at i or after it changes nothing at i. The output head
    covers the ``vocab_size`` real tokens only; the model never predicts the mask.
    """

    causal = True
