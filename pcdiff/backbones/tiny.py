"""A small bidirectional transformer trained as a masked or a uniform-noise diffusion model (CPU scale)."""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..arguments import check_int
from .protocol import NOISE_KINDS, Backbone, BackboneOutput

__all__ = ["TinyDiffusionTransformer"]


class SelfAttention(nn.Module):
    """Multi-head self-attention: every position sees the whole block, or with ``causal`` only the
    positions up to its own."""

    def __init__(self, dim: int, heads: int, dropout: float, causal: bool = False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b l (three h e) -> three b h l e", three=3, h=self.heads)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=self.causal)
        return self.out(rearrange(y, "b h l e -> b l (h e)"))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float, causal: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout, causal)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim),
            nn.GELU(),
            nn.Linear(mlp_ratio * dim, dim),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


def _check_config(vocab_size, mask_id, block_length, dim, depth, heads, mlp_ratio, dropout, noise) -> None:
    for name, value in [("vocab_size", vocab_size), ("block_length", block_length), ("dim", dim),
                        ("depth", depth), ("heads", heads), ("mlp_ratio", mlp_ratio)]:
        check_int(name, value, 1)
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
    if noise == "uniform" and mask_id is not None:
        raise ValueError(f"mask_id must be None with noise='uniform' (no token marks a noisy position), "
                         f"got {mask_id!r}")
    if noise == "mask":
        check_int("mask_id", mask_id, 0)
    if dim % heads:
        raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")


def _input_rows(vocab_size: int, mask_id: int | None) -> int:
    """Rows of the input embedding: the tokens, and the mask id's row when there is one."""
    return vocab_size if mask_id is None else max(vocab_size, mask_id) + 1


class TinyDiffusionTransformer(Backbone):
    """Bidirectional pre-norm transformer with learned positions over blocks of ``block_length``.

    ``noise="mask"`` (the default): the input embedding has a row for the mask id (which sits outside
    the output vocabulary when ``mask_id >= vocab_size``); the output head covers only the
    ``vocab_size`` real tokens, so the model can never predict the mask. ``noise="uniform"``:
    ``mask_id`` is None, the embedding has the ``vocab_size`` token rows only, and a noisy position
    holds a uniformly random token (the same transformer, trained by the same trainer with uniform
    corruption: :mod:`pcdiff.train.backbone`). The defaults (dim 128, depth 4) give about 0.8M parameters.
    """

    #: position i reads only the tokens before it (the autoregressive subclass sets it)
    causal = False

    def __init__(
        self,
        vocab_size: int,
        mask_id: int | None,
        block_length: int,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        noise: str = "mask",
    ):
        super().__init__()
        _check_config(vocab_size, mask_id, block_length, dim, depth, heads, mlp_ratio, dropout, noise)
        if self.causal and noise != "mask":
            raise ValueError("the causal model reads the mask id as its start symbol: noise must be 'mask', "
                             f"got {noise!r}")
        self.vocab_size = vocab_size
        self.noise = noise
        self.mask_id = mask_id
        self.block_length = block_length
        self.hidden_size = dim
        self.config = dict(vocab_size=vocab_size, mask_id=mask_id, block_length=block_length, dim=dim,
                           depth=depth, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout)
        if noise != "mask":             # a masked model's config (and checkpoint) stays as it always was
            self.config["noise"] = noise

        self.token_embedding = nn.Embedding(_input_rows(vocab_size, mask_id), dim)
        self.position_embedding = nn.Embedding(block_length, dim)
        self.embed_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout, self.causal) for _ in range(depth))
        self.final_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)
        self.apply(self._init_weights)

    @classmethod
    def parameter_values(cls, config: dict) -> int:
        """How many parameter values the model ``cls(**config)`` holds, computed without building it,
        so that a config read from a file is sized (and its fields checked, each error naming the
        field) before anything is allocated. Equals ``num_parameters()`` of the built model."""
        try:
            bound = inspect.signature(cls.__init__).bind(None, **config)
        except TypeError as err:
            raise ValueError(f"not a {cls.__name__} config: {err}") from None
        bound.apply_defaults()
        args = {k: v for k, v in bound.arguments.items() if k != "self"}
        _check_config(**args)
        dim, hidden, vocab = args["dim"], args["mlp_ratio"] * args["dim"], args["vocab_size"]
        block = 4 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) + (dim * hidden + hidden) + (hidden * dim + dim)
        embeddings = _input_rows(vocab, args["mask_id"]) * dim + args["block_length"] * dim
        return embeddings + args["depth"] * block + 2 * dim + dim * vocab + vocab

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # small init keeps the untrained model's logits near uniform, so early losses are ~log V
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def compute(self, tokens: torch.Tensor) -> BackboneOutput:
        length = tokens.shape[1]
        if length > self.block_length:
            raise ValueError(f"tokens have length {length}, more than block_length {self.block_length}")
        if self.causal:         # behind a start symbol (the mask id): position i reads x_<i, never its own
            tokens = torch.cat([torch.full_like(tokens[:, :1], self.mask_id), tokens[:, :-1]], dim=1)
        positions = torch.arange(length, device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)  # [B, L, D]
        x = self.embed_dropout(x)
        for block in self.blocks:
            x = block(x)
        hidden = self.final_norm(x)  # [B, L, D]
        return BackboneOutput(logits=self.head(hidden), hidden=hidden)  # logits [B, L, V]
