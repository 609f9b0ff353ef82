"""The CoDD output layer: the backbone's logits as circuit evidence (:mod:`.evidence`), the block
distribution p̂ ∝ C(x) · Π softmax(logits/T) and its queries (:mod:`.distribution`, :mod:`.any_order`,
:mod:`.mode`), the rules that order positions (:mod:`.rules`), backbone-conditioned adapters
(:mod:`.adapters`) and the layer that holds a circuit and an adapter (:mod:`.layer`)."""
from .adapters import (ADAPTERS, Adapter, AdapterOutput, LatentEvidenceAdapter, LowRankAdapter, StaticAdapter,
                       make_adapter, register_adapter)
from .distribution import CoDDBlockDistribution, SampleWithMarginals
from .evidence import candidate_evidence, soft_evidence
from .layer import STRUCTURES, CoDDLayer
from .mode import MapResult
from .rules import REMASKING, confidence, draw

__all__ = ["CoDDBlockDistribution", "SampleWithMarginals", "MapResult", "CoDDLayer", "STRUCTURES",
           "Adapter", "AdapterOutput", "StaticAdapter", "LatentEvidenceAdapter", "LowRankAdapter", "ADAPTERS",
           "register_adapter", "make_adapter", "soft_evidence", "candidate_evidence", "REMASKING", "confidence", "draw"]
