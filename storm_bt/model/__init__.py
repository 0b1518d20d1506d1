"""Window models and their training: STORM (dual VQ-VAE over time-series and cross-sectional chunks,
fused, with a factor module), the FactorVAE baseline, the shared trainer and the Qlib adapter.

A new model goes here: one module with a class that satisfies :class:`WindowNetwork`
(:mod:`storm_bt.model.network`), trained under ``qrun`` by :class:`WindowModel` with
``network: your.module.YourNetwork`` in the workflow YAML (:mod:`storm_bt.model.factorvae` is one).
"""

from storm_bt.model.config import ABLATIONS, PRESETS, StormConfig
from storm_bt.model.factorvae import FactorVAE, FactorVAEModel
from storm_bt.model.network import WindowNetwork, WindowOutput
from storm_bt.model.qlib_model import StormModel, WindowModel
from storm_bt.model.quantizer import VectorQuantizer, VQOutput
from storm_bt.model.storm import Storm, StormEmbeddings

__all__ = [
    "ABLATIONS",
    "PRESETS",
    "FactorVAE",
    "FactorVAEModel",
    "Storm",
    "StormConfig",
    "StormEmbeddings",
    "StormModel",
    "VQOutput",
    "VectorQuantizer",
    "WindowModel",
    "WindowNetwork",
    "WindowOutput",
]
