"""DiffusionGemma (``transformers.DiffusionGemmaForBlockDiffusion``, text only) behind the Backbone contract.

DiffusionGemma is an encoder–decoder block-diffusion model with **uniform noise**: the context (prompt, then
every finished block) is encoded causally into a KV cache once; a bidirectional decoder reads that cache
read-only and refines a *canvas* of ``canvas_length`` tokens that starts as uniformly random tokens, taking
the previous step's logits as self-conditioning. So ``noise = "uniform"`` and ``mask_id`` is None: nothing in
a canvas marks the positions still to decide; the decoding loop (:mod:`pcdiff.decode.canvas`) keeps them.

The stepwise interface the loop uses::

    context = backbone.start(prompt)                  # encode the prompt into a fresh cache
    out = backbone.decode(context, canvas, sc_logits)  # one decoder call: logits [B, L, V], hidden [B, L, D]
    backbone.extend(context, block)                   # encode a finished block, ready for the next canvas

It calls the model the way its own ``generate`` does (explicit position ids, the encoder's mask mapping built
by the model's ``create_masks_for_generate``, the decoder's by ``create_diffusion_decoder_attention_mask``),
so the same canvases give the same logits as inside ``model.generate``.

``compute(tokens)`` (the generic contract, e.g. for training a layer on a frozen backbone): ``tokens`` [B, N]
is context followed by one canvas, the last ``canvas_length`` positions; the context is encoded into a fresh
cache and the canvas decoded once without self-conditioning. Logits and hidden cover all N positions as the
contract asks: at the canvas the decoder's; at context positions the given token with certainty (0 at the
token, -inf elsewhere: the decoder predicts only the canvas) and the encoder's last hidden state.
``transformers`` is imported only inside :func:`load_diffusion_gemma`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .protocol import Backbone, BackboneOutput, check_tokens

__all__ = ["DiffusionGemmaBackbone", "CanvasContext", "is_diffusion_gemma_config"]


def is_diffusion_gemma_config(config) -> bool:
    """Whether a transformers config describes DiffusionGemma (what :func:`.hf.load_hf_backbone` dispatches on)."""
    return getattr(config, "model_type", None) == "diffusion_gemma"


@dataclass
class CanvasContext:
    """What the decoder reads for the next canvas: the model's KV cache over ``length`` context tokens (prompt
    and finished blocks) of a batch of ``batch`` rows. Made by :meth:`DiffusionGemmaBackbone.start`."""

    cache: object
    length: int
    batch: int


class DiffusionGemmaBackbone(Backbone):
    """A frozen ``DiffusionGemmaForBlockDiffusion`` (text only). Outputs are float32 whatever the model's dtype.

    ``canvas_length`` (L) is the model's block: every :meth:`decode` takes a canvas [B, L].
    """

    noise = "uniform"

    def __init__(self, model: nn.Module):
        super().__init__()
        config = getattr(model, "config", None)
        if not is_diffusion_gemma_config(config) or not hasattr(model, "lm_head"):
            raise TypeError(f"model must be a transformers DiffusionGemmaForBlockDiffusion, got {type(model).__name__}")
        self.model = model
        text = config.get_text_config()
        self.vocab_size = int(model.lm_head.weight.shape[0])   # the head's width is the truth
        self.hidden_size = int(text.hidden_size)
        self.canvas_length = int(config.canvas_length)
        self.mask_id = None

    # ------------------------------------------------------------------ the stepwise interface
    def start(self, prompt: torch.Tensor) -> CanvasContext:
        """Encode ``prompt`` [B, P] (P >= 1) into a fresh cache: the context of the first canvas."""
        return self._start(prompt)[0]

    def extend(self, context: CanvasContext, block: torch.Tensor) -> torch.Tensor:
        """Encode the finished ``block`` [B, n] after the context (in place); returns the encoder's last
        hidden state [B, n, D] (float32)."""
        check_tokens(block, self.vocab_size, None)
        if block.shape[0] != context.batch:
            raise ValueError(f"block has {block.shape[0]} rows but the context has {context.batch}")
        return self._encode(context, block)

    @torch.no_grad()
    def decode(self, context: CanvasContext, canvas: torch.Tensor,
               self_conditioning_logits: torch.Tensor | None = None) -> BackboneOutput:
        """One decoder call on ``canvas`` [B, L] after the context, self-conditioned on the previous step's
        (processed) logits [B, L, V] (None: the first step) -> logits [B, L, V] and hidden [B, L, D], float32."""
        check_tokens(canvas, self.vocab_size, None)
        if canvas.shape != (context.batch, self.canvas_length):
            raise ValueError(f"canvas must have shape [{context.batch}, {self.canvas_length}] (rows, canvas_length), "
                             f"got {tuple(canvas.shape)}")
        if self_conditioning_logits is not None:
            if self_conditioning_logits.shape != (*canvas.shape, self.vocab_size):
                raise ValueError(f"self_conditioning_logits must have shape {(*canvas.shape, self.vocab_size)}, "
                                 f"got {tuple(self_conditioning_logits.shape)}")
            # the model's generate hands them back in the embeddings' dtype
            self_conditioning_logits = self_conditioning_logits.to(self._embeddings_dtype())
        decoder = self.model.model.decoder
        ones = torch.ones(context.batch, context.length + self.canvas_length, dtype=torch.bool, device=canvas.device)
        masks = decoder.create_diffusion_decoder_attention_mask(
            config=self.model.config, inputs_embeds=canvas.unsqueeze(-1), cache=context.cache,
            decoder_attention_mask=ones)
        positions = torch.arange(context.length, context.length + self.canvas_length, dtype=torch.int32,
                                 device=canvas.device).unsqueeze(0)
        out = self.model(decoder_input_ids=canvas, self_conditioning_logits=self_conditioning_logits,
                         decoder_attention_mask=masks, cache=context.cache, decoder_position_ids=positions,
                         output_hidden_states=True)
        return BackboneOutput(logits=out.logits.float(), hidden=out.hidden_states[-1].float())

    # ------------------------------------------------------------------ the generic contract
    def compute(self, tokens: torch.Tensor) -> BackboneOutput:
        """tokens [B, N] = context (N − L positions, N > L) then one canvas (the last L) -> logits, hidden
        [B, N, ...]: see the module docstring."""
        n, length = tokens.shape[1], self.canvas_length
        if n <= length:
            raise ValueError(f"tokens must hold at least one context token before the canvas of {length}, "
                             f"got length {n}")
        context, encoded = self._start(tokens[:, :n - length])
        out = self.decode(context, tokens[:, n - length:])
        certain = torch.full((*tokens.shape[:1], n - length, self.vocab_size), -torch.inf, device=tokens.device)
        certain.scatter_(-1, tokens[:, :n - length, None], 0.0)                  # [B, N-L, V]
        return BackboneOutput(logits=torch.cat([certain, out.logits], 1), hidden=torch.cat([encoded, out.hidden], 1))

    # ------------------------------------------------------------------ internals
    def _embeddings_dtype(self) -> torch.dtype:
        return self.model.model.decoder.embed_tokens.weight.dtype

    def _start(self, prompt: torch.Tensor) -> tuple[CanvasContext, torch.Tensor]:
        """A fresh cache holding ``prompt`` [B, P], and the encoder's last hidden state [B, P, D]."""
        check_tokens(prompt, self.vocab_size, None)
        from transformers import DynamicCache       # present: the model is a transformers model
        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        context = CanvasContext(cache=cache, length=0, batch=prompt.shape[0])
        return context, self._encode(context, prompt)

    @torch.no_grad()
    def _encode(self, context: CanvasContext, tokens: torch.Tensor) -> torch.Tensor:
        """Run the encoder on ``tokens`` [B, n] after the context, as the model's generate does."""
        encoder = self.model.model.encoder
        total = context.length + tokens.shape[1]
        positions = torch.arange(context.length, total, dtype=torch.int32, device=tokens.device).unsqueeze(0)
        dummy = torch.empty((context.batch, tokens.shape[1], 0), dtype=self.model.dtype, device=tokens.device)
        masks = encoder.create_masks_for_generate(
            config=self.model.config, inputs_embeds=dummy, cache=context.cache, position_ids=positions,
            attention_mask=torch.ones(context.batch, total, dtype=torch.bool, device=tokens.device))
        out = encoder(input_ids=tokens.contiguous(), attention_mask=masks, cache=context.cache, position_ids=positions)
        context.cache = out.cache
        context.length = total
        return out.last_hidden_state.float()
