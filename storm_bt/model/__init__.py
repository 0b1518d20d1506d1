"""Window models and their training: STORM (dual VQ-VAE over time-series and cross-sectional chunks,
fused, with a factor module), the FactorVAE baseline, the shared trainer and the Qlib adapter.

A new model goes here: one module with its ``nn.Module`` (see :mod:`storm_bt.model.factorvae`).
"""

from storm_bt.model.config import ABLATIONS, PRESETS, StormConfig
from storm_bt.model.factorvae import FactorVAE, FactorVAEModel
from storm_bt.model.qlib_model import StormModel
from storm_bt.model.quantizer import VectorQuantizer, VQOutput
from storm_bt.model.storm import Storm, StormEmbeddings, StormOutput

__all__ = [
    "ABLATIONS",
    "PRESETS",
    "FactorVAE",
    "FactorVAEModel",
    "Storm",
    "StormConfig",
    "StormEmbeddings",
    "StormModel",
    "StormOutput",
    "VQOutput",
    "VectorQuantizer",
]
