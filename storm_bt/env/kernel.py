"""The market rules of the trading environment, in one numba-compiled step.

Every shell (the gymnasium ``Env``, the batched ``VecEnv``, the backtrader parity test) calls
:func:`execute` so the rules exist once:

* the agent decides after the close of bar t; the order fills at the open of bar t+1
  (``FILL_NEXT_OPEN``, the default) or at the close of bar t (``FILL_CLOSE``, the paper's
  convention, not tradable in practice);
* buys pay ``price * (1 + slippage)``, sells receive ``price * (1 - slippage)``; commission is
  ``commission * |shares| * execution price``, charged once per trade;
* shares are integers and cash never goes negative: a buy is cut to what cash affords;
* the reward of the step is ``log(V_{t+1} / V_t)``, values marked at the closes, costs included:
  the consequence of the decision taken at t, not of the one before.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "ACTION_BUY_ALL",
    "ACTION_HOLD",
    "ACTION_SELL_ALL",
    "BANKRUPT_REWARD",
    "FILL_CLOSE",
    "FILL_NEXT_OPEN",
    "account_features",
    "execute",
    "observe_batch",
    "order_shares",
    "step_batch",
]

FILL_NEXT_OPEN = 0
FILL_CLOSE = 1
ACTION_SELL_ALL, ACTION_HOLD, ACTION_BUY_ALL = 0, 1, 2
BANKRUPT_REWARD = -10.0  # reward of a step that wipes out the portfolio (ends the episode)


@njit(cache=True)
def target_shares(discrete: bool, action: float, shares: int, value: float, price: float) -> int:
    """Shares wanted after the action: discrete {sell all, hold, buy all (as many as cash allows)}
    or a continuous target position in [-1, 1] of the portfolio value."""
    if discrete:
        a = int(action)
        if a == ACTION_SELL_ALL:
            return 0
        if a == ACTION_HOLD:
            return shares
        return np.iinfo(np.int64).max  # buy all: execute() cuts it to what cash affords
    return math.trunc(action * value / price)


@njit(cache=True)
def order_shares(
    discrete: bool,
    action: float,
    cash: float,
    shares: int,
    close_now: float,
    price: float,
    commission: float,
    slippage: float,
) -> tuple[int, float]:
    """Signed shares the action trades when the order fills at ``price``, and the price paid after
    slippage. Sizing happens at the fill price (a buy is cut to what cash affords there);
    ``close_now`` marks the portfolio for a continuous target. The backtrader bridge sizes its
    orders with this same function, so the two sides differ only in their accounting."""
    want = target_shares(discrete, action, shares, cash + shares * close_now, price)
    if want > shares:
        exec_price = price * (1.0 + slippage)
        affordable = math.floor(cash / (exec_price * (1.0 + commission)))
        return max(min(want - shares, affordable), 0), exec_price
    if want < shares:
        return want - shares, price * (1.0 - slippage)
    return 0, price


@njit(cache=True)
def execute(
    t: int,
    cash: float,
    shares: int,
    action: float,
    discrete: bool,
    opens: np.ndarray,
    closes: np.ndarray,
    fill: int,
    commission: float,
    slippage: float,
) -> tuple[float, int, float, int, float, float]:
    """Decide at the close of ``t``, fill, mark at the close of ``t + 1``.

    Returns ``(cash, shares, execution price, traded shares (signed), cost, value at t + 1)``.
    """
    price = opens[t + 1] if fill == FILL_NEXT_OPEN else closes[t]
    delta, exec_price = order_shares(discrete, action, cash, shares, closes[t], price, commission, slippage)
    cost = commission * abs(delta) * exec_price
    cash = cash - delta * exec_price - cost
    shares = shares + delta
    value_next = cash + shares * closes[t + 1]
    return cash, shares, exec_price, delta, cost, value_next


@njit(cache=True)
def step_batch(
    t: np.ndarray,
    cash: np.ndarray,
    shares: np.ndarray,
    actions: np.ndarray,
    discrete: bool,
    asset: np.ndarray,
    opens: np.ndarray,
    closes: np.ndarray,
    fill: int,
    commission: float,
    slippage: float,
    values: np.ndarray,
    rewards: np.ndarray,
) -> None:
    """Step every environment ``i`` of a batch in place; ``asset[i]`` picks its row of ``opens``/``closes``.

    ``values`` receives the marked value after the step and ``rewards`` its log change
    (``BANKRUPT_REWARD`` when the value is gone).
    """
    for i in range(len(t)):
        a = asset[i]
        before = values[i]
        c, s, _, _, _, after = execute(
            t[i], cash[i], shares[i], actions[i], discrete, opens[a], closes[a], fill, commission, slippage
        )
        cash[i] = c
        shares[i] = s
        values[i] = after
        rewards[i] = math.log(after / before) if after > 0 and before > 0 else BANKRUPT_REWARD
        t[i] += 1


@njit(cache=True)
def observe_batch(
    envs: np.ndarray,
    t: np.ndarray,
    cash: np.ndarray,
    shares: np.ndarray,
    values: np.ndarray,
    asset: np.ndarray,
    features: np.ndarray,
    closes: np.ndarray,
    initial_cash: float,
    obs: np.ndarray,
) -> None:
    """Write the observation rows of ``envs``: the bar's features, then position share, cash share and
    log(value / initial cash) (0, 0 and ``BANKRUPT_REWARD`` once the value is gone)."""
    width = features.shape[2]
    for i in envs:
        a, bar = asset[i], t[i]
        obs[i, :width] = features[a, bar]
        obs[i, width], obs[i, width + 1], obs[i, width + 2] = account_features(
            shares[i], closes[a, bar], cash[i], values[i], initial_cash
        )


@njit(cache=True)
def account_features(shares: int, close: float, cash: float, value: float, initial_cash: float):
    """Position share, cash share and log(value / initial cash); 0, 0, ``BANKRUPT_REWARD`` once the value is gone."""
    if value <= 0:
        return 0.0, 0.0, BANKRUPT_REWARD
    return shares * close / value, cash / value, math.log(value / initial_cash)
