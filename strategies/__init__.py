"""Qlib portfolio strategies that ``qrun`` YAMLs name (installed as ``storm_bt.strategies``).

Nothing here imports the rest of ``storm_bt``: the backtrader strategies live in
:mod:`storm_bt.bridge`, which imports the shared ranking rule from here, never the reverse.
"""

from storm_bt.strategies.topk_weekly import WeeklyTopkDropoutStrategy, topk_drop_swaps

__all__ = ["WeeklyTopkDropoutStrategy", "topk_drop_swaps"]
