"""The compiler: symbolic circuit → tensor layout (:mod:`.layout`) → ``nn.Module`` (:mod:`.module`)."""
from .candidates import CandidateEvidence
from .module import CompiledCircuit, Evidence, LogParams, compile

__all__ = ["CandidateEvidence", "CompiledCircuit", "Evidence", "LogParams", "compile"]
