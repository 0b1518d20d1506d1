"""Qlib data handlers for US stocks that ``qrun`` YAMLs name.

Installed as ``storm_bt.handlers``; nothing here imports the rest of storm_bt.
"""

from storm_bt.handlers.alpha158_us import LABELS, Alpha158US, label_horizon

__all__ = ["LABELS", "Alpha158US", "label_horizon"]
