"""storm_bt: the STORM spatio-temporal factor model inside Qlib, gymnasium and backtrader workflows."""

__version__ = "0.1.0"

__all__ = ["__version__"]
