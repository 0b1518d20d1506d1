"""Qlib data handlers and processors for US stocks that ``qrun`` YAMLs name.

Installed as ``storm_bt.handlers``; nothing here imports the rest of storm_bt.
"""

from storm_bt.handlers.alpha158_us import LABELS, Alpha158US, label_horizon
from storm_bt.handlers.price_bars_us import BAR_FIELDS, PriceBarsUS
from storm_bt.handlers.processors import ShuffleLabel

__all__ = ["BAR_FIELDS", "LABELS", "Alpha158US", "PriceBarsUS", "ShuffleLabel", "label_horizon"]
