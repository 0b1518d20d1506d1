"""Baselines trained and evaluated under exactly STORM's protocol (same windows, trainer and selection)."""

from storm_bt.baselines.factorvae import FactorVAE, FactorVAEModel

__all__ = ["FactorVAE", "FactorVAEModel"]
