"""Trading environment: a numba step kernel with gymnasium (and, batched, stable-baselines3) shells.

A market rule goes in :mod:`storm_bt.env.kernel` (numba functions, named ``*_nb``), its codes and
argument tuples in :mod:`storm_bt.env.enums`; the shells only keep accounts and clocks.
"""

import gymnasium

from storm_bt.env.trading_env import EnvConfig, TradingEnv
from storm_bt.env.vec_env import TradingVecEnv

__all__ = ["ENV_ID", "EnvConfig", "TradingEnv", "TradingVecEnv"]

ENV_ID = "storm_bt/Trading-v0"
if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="storm_bt.env.trading_env:TradingEnv")
