"""Trading agents: the states they observe (prices, STORM factors, token sets) and their training
and selection with stable-baselines3.

A new agent (another SB3 algorithm, a rule) goes in :mod:`storm_bt.agents.sb3`; a new state in
:mod:`storm_bt.agents.states`.
"""

from storm_bt.agents.sb3 import BUY_AND_HOLD, AgentSpec, load_policy, train_agent
from storm_bt.agents.states import STATES, StockMarket

__all__ = ["BUY_AND_HOLD", "STATES", "AgentSpec", "StockMarket", "load_policy", "train_agent"]
