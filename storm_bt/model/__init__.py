"""Window models and their training: STORM (dual VQ-VAE over time-series and cross-sectional chunks,
fused, with a factor module), the FactorVAE baseline, the shared trainer and the Qlib adapter.

A new model goes here: one module with a class that satisfies :class:`WindowNetwork`
(:mod:`storm_bt.model.network`), trained under ``qrun`` by :class:`WindowModel` with
``network: your.module.YourNetwork`` in the workflow YAML (:mod:`storm_bt.model.factorvae` is one).

The Qlib adapters (``StormModel``, ``WindowModel``, ``FactorVAEModel``) load on first use, so a
training process that only needs the networks and the trainer (``experiments/train_storm.py``
under ``accelerate launch``) never imports Qlib.
"""

from importlib import import_module

from storm_bt.model.config import ABLATIONS, PRESETS, StormConfig
from storm_bt.model.network import WindowNetwork, WindowOutput
from storm_bt.model.quantizer import VectorQuantizer, VQOutput
from storm_bt.model.storm import Storm, StormEmbeddings

_QLIB_ADAPTERS = {"StormModel": "qlib_model", "WindowModel": "qlib_model", "FactorVAEModel": "factorvae"}
_NETWORKS = {"FactorVAE": "factorvae"}  # a module that imports the Qlib adapter too


def __getattr__(name: str):
    module = _QLIB_ADAPTERS.get(name) or _NETWORKS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)


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
