"""pcdiff: Coupled Discrete Diffusion (CoDD) output layers for diffusion language models.

Consumes the circuit core (:mod:`structures`) through its public API only.
"""
__version__ = "0.1.0"
