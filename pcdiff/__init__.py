"""pcdiff: Coupled Discrete Diffusion (CoDD) output layers for diffusion language models.

The pipeline, one subpackage a stage (the circuit core, :mod:`structures`, sits below all of them
and is consumed through its public API only):

    codd/       the CoDD block distribution p̂ ∝ C(x) · Π softmax(logits/T), adapters, the layer
    decode/     generate(): semi-autoregressive decoding with the layer
    backbones/  the backbone contract, a tiny diffusion transformer, Hugging Face models
    data/       item data sets (words, Python lines, text files)
    train/      noise, the training loop, the backbone's and the layer's trainers, checkpoints, DDP
    app/        evaluation, reports, run folders, the demo and the `pcdiff` command line
"""
__version__ = "0.2.0"

from .backbones import (Backbone, BackboneOutput, HFBackbone, TinyCausalTransformer, TinyDiffusionTransformer,
                        load_hf_backbone)
from .codd import (ADAPTERS, REMASKING, Adapter, AdapterOutput, CoDDBlockDistribution, CoDDLayer, make_adapter,
                   register_adapter)
from .data import ItemData, Vocabulary, load_dataset
from .decode import BlockDecoder, denoise, generate
from .train import (BackboneTrainingConfig, LayerTrainingConfig, evaluate_nll, load_layer, save_layer,
                    train_autoregressive, train_backbone, train_codd_layer)

__all__ = [
    "CoDDLayer", "CoDDBlockDistribution", "Adapter", "AdapterOutput", "ADAPTERS", "register_adapter",
    "make_adapter", "REMASKING",
    "generate", "denoise", "BlockDecoder",
    "Backbone", "BackboneOutput", "TinyDiffusionTransformer", "TinyCausalTransformer", "HFBackbone", "load_hf_backbone",
    "ItemData", "Vocabulary", "load_dataset",
    "train_backbone", "train_codd_layer", "train_autoregressive", "BackboneTrainingConfig", "LayerTrainingConfig",
    "evaluate_nll", "save_layer", "load_layer",
]
