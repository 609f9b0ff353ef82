"""The compiler: symbolic circuit → tensor layout (:mod:`.layout`) → ``nn.Module`` (:mod:`.module`)."""
from .module import CompiledCircuit, Evidence, LogParams, compile

__all__ = ["CompiledCircuit", "Evidence", "LogParams", "compile"]
