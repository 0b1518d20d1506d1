"""Other libraries' models as the walk-forward compares them with STORM (see :mod:`storm_bt.model` for STORM's own)."""

from storm_bt.baselines.lightgbm_refit import RefitLGBModel

__all__ = ["RefitLGBModel"]
