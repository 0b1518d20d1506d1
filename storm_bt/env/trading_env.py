"""A single-stock trading environment (gymnasium) over any per-date feature array.

The observation at bar t is that bar's feature vector (STORM's pooled factor embedding by
default, or anything else per date) and three account features: the position's share of the
portfolio value, the cash share, and the log of value over the starting cash. Market rules live
in :mod:`storm_bt.env.kernel`; this class only keeps the account and the clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pandas as pd

from storm_bt.env.enums import Action, Fill, OrderStatus, Rules
from storm_bt.env.kernel import observe_single_nb, step_single_nb

__all__ = ["EnvConfig", "TradingEnv", "check_market"]

FILLS = {code.name.lower(): code for code in Fill}  # EnvConfig.fill names a Fill code
ACCOUNT_FEATURES = 3
STATUSES = {code.value: code for code in OrderStatus}
EXACT_CODES = (int, np.int64, np.int32)  # action types taken as Action codes without further checks (not bool)


@dataclass(frozen=True)
class EnvConfig:
    """Trading rules and episode shape; the backtrader bridge maps the same fields onto its broker."""

    initial_cash: float = 1_000_000.0
    commission_bps: float = 10.0  # per side, on the traded notional
    slippage_bps: float = 5.0  # buys pay this much above the fill price, sells receive this much below
    fill: str = "next_open"  # "next_open" (tradable) or "close" (the paper's same-bar fill)
    action: str = "discrete"  # {sell all, hold, buy all}, or "continuous": target position in [-1, 1]
    episode_length: int | None = None  # bars per episode with random starts; None = the whole range

    def __post_init__(self) -> None:
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {sorted(FILLS)}, got {self.fill!r}.")
        if self.action not in ("discrete", "continuous"):
            raise ValueError(f"action must be 'discrete' or 'continuous', got {self.action!r}.")
        if not (math.isfinite(self.initial_cash) and self.initial_cash > 0):
            raise ValueError(f"initial_cash must be a positive finite amount, got {self.initial_cash!r}.")
        for name in ("commission_bps", "slippage_bps"):
            bps = getattr(self, name)
            if not (math.isfinite(bps) and 0 <= bps < 10_000):  # 100% or more would make a sale cost money
                raise ValueError(f"{name} must be finite, at least 0 and below 10000 (100% of notional), got {bps!r}.")
        if self.episode_length is not None and self.episode_length < 1:
            raise ValueError(f"episode_length must be positive or None, got {self.episode_length}.")

    @property
    def discrete(self) -> bool:
        return self.action == "discrete"

    @cached_property
    def rules(self) -> Rules:
        """The kernel's arguments, derived here once for every shell (and the backtrader broker)."""
        return Rules(self.discrete, int(FILLS[self.fill]), self.commission_bps / 1e4, self.slippage_bps / 1e4)

    def action_space(self) -> gym.spaces.Space:
        return gym.spaces.Discrete(3) if self.discrete else gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def check_bars(self, n_bars: int) -> None:
        """An episode of ``episode_length`` steps needs one bar more than that."""
        if self.episode_length is not None and self.episode_length > n_bars - 1:
            raise ValueError(f"episode_length {self.episode_length} needs more than the {n_bars} bars given.")


def check_market(features: np.ndarray, opens: np.ndarray, closes: np.ndarray, dates: pd.Index) -> None:
    """Shapes agree, prices are positive, features are finite: NaN never reaches the agent."""
    n = len(closes)
    if features.ndim != 2 or len(features) != n or len(opens) != n or len(dates) != n:
        raise ValueError(
            f"Expected features (T, E) and opens, closes, dates of length T; got features "
            f"{features.shape}, opens {opens.shape}, closes {closes.shape}, {len(dates)} dates."
        )
    if n < 2:
        raise ValueError(f"Need at least 2 bars to trade, got {n}.")
    for name, values in (("open", opens), ("close", closes)):
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            raise ValueError(f"{name} price is missing or not positive on {dates[np.argmax(bad)]}.")
    bad_rows = ~np.isfinite(features).all(axis=1)
    if bad_rows.any():
        raise ValueError(
            f"features contain NaN/inf on {int(bad_rows.sum())} bar(s), first {dates[np.argmax(bad_rows)]}:"
            " pick a date range where the stock trades, or fill the features first."
        )


class TradingEnv(gym.Env):
    """Trade one stock: features (T, E), open and close prices (T,), one bar per step."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        features: np.ndarray,
        opens: np.ndarray,
        closes: np.ndarray,
        dates: pd.DatetimeIndex | None = None,
        config: EnvConfig | None = None,
    ) -> None:
        self.config = config or EnvConfig()
        self.features = np.asarray(features, dtype=np.float32)
        self.opens = np.ascontiguousarray(opens, dtype=np.float64)
        self.closes = np.ascontiguousarray(closes, dtype=np.float64)
        self.dates = pd.RangeIndex(len(self.closes)) if dates is None else pd.DatetimeIndex(dates)
        check_market(self.features, self.opens, self.closes, self.dates)
        self.config.check_bars(len(self.closes))
        dim = self.features.shape[1] + ACCOUNT_FEATURES
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)
        self.action_space = self.config.action_space()
        self._bar_dates = self.dates.tolist()  # info["date"] per step; indexing the pandas index costs microseconds

    # -- gymnasium API ------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        last = len(self.closes) - 1
        length = self.config.episode_length
        if length is None:
            self._t, self._end = 0, last
        else:
            self._t = int(self.np_random.integers(0, last - length + 1))
            self._end = self._t + length
        self.cash, self.shares = float(self.config.initial_cash), 0
        self.value = self.cash
        return self._observation(), self._info(traded=0, cost=0.0, price=float("nan"), status=OrderStatus.NO_ORDER)

    def step(self, action):
        if not hasattr(self, "_t"):
            raise RuntimeError("Call reset() before the first step().")
        act = self._checked_action(action)
        if self._t >= self._end:
            raise RuntimeError("The episode is over: call reset() before step().")
        observation = np.empty(self.observation_space.shape, dtype=np.float32)
        self.cash, self.shares, self.value, reward, traded, cost, price, status = step_single_nb(
            self._t, self.cash, self.shares, self.value, act, self.opens, self.closes, self.features,
            *self.config.rules, self.config.initial_cash, observation,
        )  # fmt: skip
        self._t += 1
        terminated = self.value <= 0 or self._t >= len(self.closes) - 1
        truncated = not terminated and self._t >= self._end
        return observation, reward, terminated, truncated, self._info(traded, cost, price, STATUSES[status])

    # -- helpers ------------------------------------------------------------------------------------

    def _checked_action(self, action) -> float:
        """The action as the kernel takes it (a float), after checking it is in the action space."""
        if type(action) in EXACT_CODES and 0 <= action < len(Action) and self.config.discrete:
            return float(action)  # the common case, without the general checks' microseconds
        if self.config.discrete:
            whole = np.ndim(action) == 0 and np.isfinite(action) and float(action) == int(action)
            normal = int(action) if whole else action
        else:
            normal = np.asarray(action, dtype=np.float32).reshape(self.action_space.shape)
        if not self.action_space.contains(normal):
            raise ValueError(f"Action {action!r} is not in the action space {self.action_space}.")
        return float(normal) if self.config.discrete else float(normal[0])

    def _observation(self) -> np.ndarray:
        observation = np.empty(self.observation_space.shape, dtype=np.float32)
        t = self._t
        observe_single_nb(
            self.features[t], self.closes[t], self.cash, self.shares, self.value, self.config.initial_cash, observation
        )
        return observation

    def _info(self, traded: int, cost: float, price: float, status: OrderStatus) -> dict[str, Any]:
        return {
            "date": self._bar_dates[self._t],
            "value": self.value,
            "cash": self.cash,
            "shares": self.shares,
            "traded": traded,
            "cost": cost,
            "price": price,
            "status": status,
        }
