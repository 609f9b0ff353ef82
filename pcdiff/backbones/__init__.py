"""Backbones: the masked diffusion models whose per-token logits CoDD couples.

``hf`` imports ``transformers`` lazily, so importing this package never needs it.
"""
from .hf import HFBackbone, load_hf_backbone
from .protocol import Backbone, BackboneOutput, check_tokens
from .tiny import TinyDiffusionTransformer
from .training import heldout_loss, masked_diffusion_loss, train_backbone

__all__ = [
    "Backbone",
    "BackboneOutput",
    "check_tokens",
    "TinyDiffusionTransformer",
    "HFBackbone",
    "load_hf_backbone",
    "masked_diffusion_loss",
    "heldout_loss",
    "train_backbone",
]
