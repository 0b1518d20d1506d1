"""Qlib data handlers and processors for US stocks that ``qrun`` YAMLs name.

Installed as ``storm_bt.handlers``; nothing here imports the rest of storm_bt.
"""

from storm_bt.handlers.alpha158_us import LABELS, Alpha158US, label_horizon
from storm_bt.handlers.processors import ShuffleLabel

__all__ = ["LABELS", "Alpha158US", "ShuffleLabel", "label_horizon"]
