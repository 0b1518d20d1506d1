"""Trading environment: a numba step kernel with gymnasium (and, batched, stable-baselines3) shells."""

import gymnasium

from storm_bt.env.trading_env import EnvConfig, TradingEnv
from storm_bt.env.vec_env import TradingVecEnv

__all__ = ["ENV_ID", "EnvConfig", "TradingEnv", "TradingVecEnv"]

ENV_ID = "storm_bt/Trading-v0"
if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="storm_bt.env.trading_env:TradingEnv")
