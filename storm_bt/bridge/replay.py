"""Run one stock through backtrader with a policy (or a fixed action sequence) and env settings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from storm_bt.bridge.analyzers import PaperMetrics
from storm_bt.bridge.broker import make_cerebro
from storm_bt.bridge.feeds import factor_feed
from storm_bt.bridge.policy_trader import PolicyTrader
from storm_bt.env.trading_env import EnvConfig, check_market

__all__ = ["ActionSequence", "Replay", "replay"]


class ActionSequence:
    """A 'policy' that plays back a fixed list of actions, one per call."""

    def __init__(self, actions: Sequence) -> None:
        self._actions = iter(actions)

    def __call__(self, observation: np.ndarray):
        return next(self._actions)


@dataclass(frozen=True)
class Replay:
    """What backtrader did: the account after every bar, the fills, and the paper's metrics."""

    records: pd.DataFrame  # date-indexed: value, cash, shares, action
    fills: pd.DataFrame  # date, shares (signed), price, commission
    metrics: dict[str, float]

    @property
    def values(self) -> pd.Series:
        return self.records["value"]


def replay(
    policy: Callable[[np.ndarray], object],
    dates: pd.DatetimeIndex,
    opens: np.ndarray,
    closes: np.ndarray,
    features: np.ndarray | None = None,
    config: EnvConfig | None = None,
    **bars: np.ndarray,
) -> Replay:
    """Trade the bars in backtrader with the env's rules; ``bars`` may add highs, lows, volumes."""
    config = config or EnvConfig()
    dates = pd.DatetimeIndex(dates)
    checked = np.zeros((len(dates), 0)) if features is None else np.asarray(features)
    check_market(checked, np.asarray(opens), np.asarray(closes), dates)
    cerebro = make_cerebro(config)
    cerebro.adddata(factor_feed(dates, opens, closes, features, **bars))
    cerebro.addstrategy(PolicyTrader, policy=policy, config=config)
    cerebro.addanalyzer(PaperMetrics, _name="paper")
    strategy = cerebro.run()[0]
    analysis = strategy.analyzers.paper.get_analysis()
    records = pd.DataFrame(strategy.records).set_index("date")
    fills = pd.DataFrame(strategy.fills, columns=["date", "shares", "price", "commission"])
    return Replay(records=records, fills=fills, metrics=analysis["metrics"])
