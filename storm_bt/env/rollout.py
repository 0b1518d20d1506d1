"""Play a policy through a whole TradingEnv episode and keep the account after every bar."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from storm_bt.env.trading_env import TradingEnv
from storm_bt.metrics import portfolio_metrics

__all__ = ["Episode", "rollout"]


@dataclass(frozen=True)
class Episode:
    """The env's account after every bar (value, cash, shares) and the action decided at that bar."""

    records: pd.DataFrame

    @property
    def values(self) -> pd.Series:
        return self.records["value"]

    @property
    def metrics(self) -> dict[str, float]:
        return portfolio_metrics(self.values.pct_change().dropna())


def rollout(env: TradingEnv, policy: Callable[[np.ndarray], object], seed: int | None = None) -> Episode:
    """Run ``policy`` (observation -> action) from reset to the end of the episode."""
    observation, info = env.reset(seed=seed)
    rows, done = [], False
    while not done:
        action = policy(observation)
        rows.append(_record(info, float(np.asarray(action).reshape(-1)[0])))
        observation, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    rows.append(_record(info, None))
    return Episode(pd.DataFrame(rows).set_index("date"))


def _record(info: dict, action: float | None) -> dict:
    return {key: info[key] for key in ("date", "value", "cash", "shares")} | {"action": action}
