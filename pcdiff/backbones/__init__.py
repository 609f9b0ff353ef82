"""Backbones: the diffusion models whose per-token logits CoDD couples, behind one contract
(:mod:`.protocol`); a tiny bidirectional transformer (:mod:`.tiny`) and Hugging Face models (:mod:`.hf`,
which imports ``transformers`` lazily). Training them lives in :mod:`pcdiff.train`."""
from .hf import HFBackbone, load_hf_backbone
from .protocol import Backbone, BackboneOutput, check_tokens
from .tiny import TinyDiffusionTransformer

__all__ = ["Backbone", "BackboneOutput", "check_tokens", "TinyDiffusionTransformer", "HFBackbone",
           "load_hf_backbone"]
