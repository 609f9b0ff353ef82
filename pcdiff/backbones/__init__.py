"""Backbones: the diffusion models whose per-token logits CoDD couples, behind one contract
(:mod:`.protocol`); a tiny bidirectional transformer (:mod:`.tiny`) and Hugging Face models (:mod:`.hf`,
which imports ``transformers`` lazily; DiffusionGemma, a uniform-noise model, in
:mod:`.diffusion_gemma`); a tiny causal transformer (:mod:`.autoregressive`), the second model of the
decoder's AR product. Training them lives in :mod:`pcdiff.train`."""
from .autoregressive import TinyCausalTransformer
from .diffusion_gemma import DiffusionGemmaBackbone
from .hf import HFBackbone, load_hf_backbone
from .protocol import Backbone, BackboneOutput, check_tokens
from .tiny import TinyDiffusionTransformer

__all__ = ["Backbone", "BackboneOutput", "check_tokens", "TinyDiffusionTransformer", "HFBackbone",
           "load_hf_backbone", "TinyCausalTransformer",
           "DiffusionGemmaBackbone"]
