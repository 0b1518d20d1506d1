"""storm_bt: the STORM spatio-temporal factor model inside Qlib, gymnasium and backtrader workflows."""

import contextlib
import io

__version__ = "0.1.0"

__all__ = ["__version__"]

# pyqlib pulls in gym 0.26, which prints a deprecation banner on import, and Qlib's records and
# stable-baselines3 import it when present. storm_bt uses gymnasium only: load gym once, quietly.
with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(ImportError):
    import gym  # noqa: F401
