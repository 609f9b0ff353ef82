"""Stub backbones with known logits that record every input they see, so a test can replay a
decoding run step by step; small HMM layers to decode with."""
from __future__ import annotations

import numpy as np
import torch

import structures
from pcdiff.backbones import Backbone, BackboneOutput
from pcdiff.codd import CoDDLayer

V, MASK = 5, 7


class StubBackbone(Backbone):
    """logits = ``logits_fn(tokens)``; hidden = zeros; every input recorded in ``calls``.
    ``noise="uniform"``: a uniform-noise model (no mask id)."""

    def __init__(self, logits_fn, vocab_size: int = V, mask_id: int | None = MASK, noise: str = "mask"):
        super().__init__()
        self.logits_fn, self.vocab_size, self.hidden_size = logits_fn, vocab_size, 2
        self.noise, self.mask_id = noise, (mask_id if noise == "mask" else None)
        self.calls: list[torch.Tensor] = []

    def compute(self, tokens):
        self.calls.append(tokens.clone())
        logits = self.logits_fn(tokens).to(torch.float32)
        return BackboneOutput(logits, torch.zeros(*tokens.shape, self.hidden_size))


def fixed(table: torch.Tensor):
    """Context-free logits: row i of ``table`` [N, V] at position i."""
    return lambda tokens: table[: tokens.shape[1]].expand(tokens.shape[0], -1, -1)


def contextual(length: int, vocab: int = V, seed: int = 0):
    """Random logits that also depend on the token to the left (so later steps see new logits)."""
    g = torch.Generator().manual_seed(seed)
    table, shift = torch.randn(length, vocab, generator=g), torch.randn(vocab + MASK + 1, vocab, generator=g)
    return lambda tokens: table[: tokens.shape[1]] + shift[tokens.roll(1, dims=1)]


def hmm_layer(length: int, vocab: int = V, sticky: bool = False, seed: int = 0) -> CoDDLayer:
    """A float64 CoDD layer over a random 3-state HMM, or a sticky one whose positions nearly repeat."""
    if sticky:   # strongly coupled positions: the chain stays put and emits its state's token
        hidden = vocab
        circuit = structures.hmm(length, hidden, vocab, initial=np.full(hidden, 1 / hidden),
                                 transition=0.1 / hidden + 0.9 * np.eye(hidden),
                                 emission=0.1 / vocab + 0.9 * np.eye(vocab))
    else:
        circuit = structures.hmm(length, 3, vocab, seed=seed)
    return CoDDLayer(circuit, mask_id=MASK, dtype=torch.float64)
