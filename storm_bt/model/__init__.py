"""The STORM model: dual VQ-VAE over time-series and cross-sectional chunks, fused, with a factor module."""

from storm_bt.model.config import ABLATIONS, PRESETS, StormConfig
from storm_bt.model.qlib_model import StormModel
from storm_bt.model.quantizer import VectorQuantizer, VQOutput
from storm_bt.model.storm import Storm, StormEmbeddings, StormOutput

__all__ = [
    "ABLATIONS",
    "PRESETS",
    "Storm",
    "StormConfig",
    "StormEmbeddings",
    "StormModel",
    "StormOutput",
    "VQOutput",
    "VectorQuantizer",
]
