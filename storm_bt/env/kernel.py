"""The market rules of the trading environment, in one numba-compiled step.

Every shell (the gymnasium ``Env``, the batched ``VecEnv``, the backtrader parity test) calls
:func:`execute_nb` so the rules exist once:

* the agent decides after the close of bar t; the order fills at the open of bar t+1
  (``Fill.NEXT_OPEN``, the default) or at the close of bar t (``Fill.CLOSE``, the paper's
  convention, not tradable in practice);
* buys pay ``price * (1 + slippage)``, sells receive ``price * (1 - slippage)``; commission is
  ``commission * |shares| * execution price``, charged once per trade;
* shares are integers and cash never goes negative: a buy is cut to what cash affords, and the
  order's status says so (:class:`~storm_bt.env.enums.OrderStatus`);
* the reward of the step is ``log(V_{t+1} / V_t)``, values marked at the closes, costs included:
  the consequence of the decision taken at t, not of the one before.

Functions that numba compiles end in ``_nb`` (vectorbt's convention); the codes they read and
the tuples they take and return are in :mod:`storm_bt.env.enums`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from storm_bt.env.enums import (
    BANKRUPT_REWARD,
    Accounts,
    Action,
    BatchStep,
    Episodes,
    Fill,
    Market,
    Order,
    OrderStatus,
    Rules,
    Step,
)

__all__ = [
    "account_features_nb",
    "execute_nb",
    "first_invalid_action_nb",
    "observe_batch_nb",
    "observe_nb",
    "observe_single_nb",
    "order_nb",
    "restart_batch_nb",
    "restart_nb",
    "step_batch_flat_nb",
    "step_batch_nb",
    "step_single_nb",
]

BUY_ALL_SHARES = np.iinfo(np.int64).max  # the target of a buy-all: order_nb cuts it to what cash affords


@njit(cache=True)
def first_invalid_action_nb(actions: np.ndarray, discrete: bool) -> int:
    """Index of the first action outside the action space (an ``Action`` code, or a target in [-1, 1]); -1 if none."""
    for i in range(len(actions)):
        a = actions[i]
        if discrete:
            valid = a == math.floor(a) and Action.SELL_ALL.value <= a <= Action.BUY_ALL.value
        else:
            valid = abs(a) <= 1  # False for NaN
        if not valid:
            return i
    return -1


@njit(cache=True)
def target_shares_nb(discrete: bool, action: float, shares: int, value: float, price: float) -> int:
    """Shares wanted after the action: a discrete ``Action``, or a continuous target position in
    [-1, 1] of the portfolio value."""
    if discrete:
        a = int(action)
        if a == Action.SELL_ALL:
            return 0
        if a == Action.HOLD:
            return shares
        return BUY_ALL_SHARES
    return math.trunc(action * value / price)


@njit(cache=True)
def order_nb(rules: Rules, action: float, cash: float, shares: int, close_now: float, price: float) -> Order:
    """The order the action places when it fills at ``price``: signed shares, the price paid after
    slippage, and its status. Sizing happens at the fill price (a buy is cut to what cash affords
    there); ``close_now`` marks the portfolio for a continuous target. The backtrader bridge sizes
    its orders with this same function, so the two sides differ only in their accounting."""
    want = target_shares_nb(rules.discrete, action, shares, cash + shares * close_now, price)
    if want > shares:
        exec_price = price * (1.0 + rules.slippage)
        affordable = math.floor(cash / (exec_price * (1.0 + rules.commission)))
        bought = max(min(want - shares, affordable), 0)
        if bought == 0:
            return Order(0, exec_price, OrderStatus.NO_CASH.value)
        if bought < want - shares and want != BUY_ALL_SHARES:
            return Order(bought, exec_price, OrderStatus.CUT_BY_CASH.value)
        return Order(bought, exec_price, OrderStatus.FILLED.value)
    if want < shares:
        return Order(want - shares, price * (1.0 - rules.slippage), OrderStatus.FILLED.value)
    return Order(0, price, OrderStatus.NO_ORDER.value)


@njit(cache=True)
def execute_nb(
    t: int, cash: float, shares: int, action: float, opens: np.ndarray, closes: np.ndarray, rules: Rules
) -> Step:
    """Decide at the close of ``t``, fill, mark at the close of ``t + 1``."""
    price = opens[t + 1] if rules.fill == Fill.NEXT_OPEN else closes[t]
    order = order_nb(rules, action, cash, shares, closes[t], price)
    cost = rules.commission * abs(order.shares) * order.price
    cash = cash - order.shares * order.price - cost
    shares = shares + order.shares
    return Step(cash, shares, order.price, order.shares, cost, cash + shares * closes[t + 1], order.status)


@njit(cache=True)
def step_single_nb(
    t: int,
    cash: float,
    shares: int,
    value: float,
    action: float,
    opens: np.ndarray,
    closes: np.ndarray,
    features: np.ndarray,
    discrete: bool,
    fill: int,
    commission: float,
    slippage: float,
    initial_cash: float,
    observation: np.ndarray,
) -> tuple[float, int, float, float, int, float, float, int]:
    """One step of the single-stock env in one compiled call, its rules passed field by field (a
    ``Rules`` argument or a ``Step`` result costs the Python shell more than the rules themselves):
    :func:`execute_nb` from ``value`` at the close of ``t``, then bar ``t + 1``'s observation written
    into ``observation``. Returns ``(cash, shares, value, reward, traded, cost, price, status)``."""
    step = execute_nb(t, cash, shares, action, opens, closes, Rules(discrete, fill, commission, slippage))
    observe_single_nb(features[t + 1], closes[t + 1], step.cash, step.shares, step.value, initial_cash, observation)
    reward = math.log(step.value / value) if step.value > 0 else BANKRUPT_REWARD
    return step.cash, step.shares, step.value, reward, step.traded, step.cost, step.price, step.status


@njit(cache=True)
def observe_single_nb(
    row: np.ndarray, close: float, cash: float, shares: int, value: float, initial_cash: float, observation: np.ndarray
) -> None:
    """The observation of one account at one bar: the bar's feature ``row``, then the account features."""
    width = len(row)
    for k in range(width):
        observation[k] = row[k]
    observation[width], observation[width + 1], observation[width + 2] = account_features_nb(
        shares, close, cash, value, initial_cash
    )


@njit(cache=True)
def step_batch_nb(
    accounts: Accounts,
    actions: np.ndarray,
    asset: np.ndarray,
    market: Market,
    rules: Rules,
    episodes: Episodes,
    cursor: int,
    out: BatchStep,
) -> int:
    """Step every account ``i`` of a batch in place on its asset ``asset[i]``, restart the episodes that
    end (bankrupt or at the market's last bar: terminated; at ``accounts.end``: truncated) from
    ``episodes.starts[cursor:]`` in order, and write ``out``; returns how many ended."""
    last = market.closes.shape[1] - 1
    ended = 0
    for i in range(len(actions)):
        a = asset[i]
        before = accounts.value[i]
        step = execute_nb(
            accounts.t[i], accounts.cash[i], accounts.shares[i], actions[i], market.opens[a], market.closes[a], rules
        )
        accounts.cash[i] = step.cash
        accounts.shares[i] = step.shares
        accounts.value[i] = step.value
        accounts.t[i] += 1
        out.rewards[i] = math.log(step.value / before) if step.value > 0 and before > 0 else BANKRUPT_REWARD
        out.statuses[i] = step.status
        terminated = step.value <= 0 or accounts.t[i] >= last
        out.truncated[i] = not terminated and accounts.t[i] >= accounts.end[i]
        out.dones[i] = terminated or out.truncated[i]
        if out.dones[i]:
            observe_nb(i, accounts, a, market, episodes.initial_cash, out.terminal_observations[ended])
            out.ended[ended] = i
            restart_nb(i, accounts, episodes.starts[cursor + ended], episodes)
            ended += 1
    observe_batch_nb(accounts, asset, market, episodes.initial_cash, out.observations)
    return ended


@njit(cache=True)
def step_batch_flat_nb(
    t, end, cash, shares, value, actions, asset, features, opens, closes, discrete, fill, commission, slippage,
    starts, length, initial_cash, cursor, rewards, statuses, dones, truncated, observations, terminal, ended,
) -> int:  # fmt: skip
    """:func:`step_batch_nb` with its tuples passed field by field, the way the batched env calls it:
    numba reads a NamedTuple argument about 1 us slower than its fields, a twentieth of a 256-env step each."""
    return step_batch_nb(
        Accounts(t, end, cash, shares, value),
        actions,
        asset,
        Market(features, opens, closes),
        Rules(discrete, fill, commission, slippage),
        Episodes(starts, length, initial_cash),
        cursor,
        BatchStep(rewards, statuses, dones, truncated, observations, terminal, ended),
    )


@njit(cache=True)
def restart_batch_nb(
    accounts: Accounts, asset: np.ndarray, market: Market, episodes: Episodes, cursor: int, observations: np.ndarray
) -> None:
    """Restart every account from ``episodes.starts[cursor:]`` and write its first observation."""
    for i in range(len(asset)):
        restart_nb(i, accounts, episodes.starts[cursor + i], episodes)
    observe_batch_nb(accounts, asset, market, episodes.initial_cash, observations)


@njit(cache=True)
def restart_nb(i: int, accounts: Accounts, start: int, episodes: Episodes) -> None:
    """Account ``i`` back to all cash at bar ``start``, truncated ``episodes.length`` bars later."""
    accounts.t[i] = start
    accounts.end[i] = start + episodes.length
    accounts.cash[i] = episodes.initial_cash
    accounts.shares[i] = 0
    accounts.value[i] = episodes.initial_cash


@njit(cache=True)
def observe_batch_nb(
    accounts: Accounts, asset: np.ndarray, market: Market, initial_cash: float, observations: np.ndarray
) -> None:
    """Every account's observation, as :func:`observe_nb` writes it, in two loops: the feature rows
    first, in a loop LLVM turns into vector copies (interleaved with the account features, or inside
    the stepping loop, it copies element by element, 4x slower), then the account features."""
    width = market.features.shape[2]
    for i in range(len(asset)):
        a, bar, row = asset[i], accounts.t[i], observations[i]
        for k in range(width):
            row[k] = market.features[a, bar, k]
    for i in range(len(asset)):
        a, bar = asset[i], accounts.t[i]
        observations[i, width], observations[i, width + 1], observations[i, width + 2] = account_features_nb(
            accounts.shares[i], market.closes[a, bar], accounts.cash[i], accounts.value[i], initial_cash
        )


@njit(cache=True)
def observe_nb(i: int, accounts: Accounts, asset: int, market: Market, initial_cash: float, row: np.ndarray) -> None:
    """Write account ``i``'s observation into ``row``: its bar's features, then the account features."""
    bar = accounts.t[i]
    observe_single_nb(
        market.features[asset, bar], market.closes[asset, bar], accounts.cash[i], accounts.shares[i],
        accounts.value[i], initial_cash, row,
    )  # fmt: skip


@njit(cache=True)
def account_features_nb(shares: int, close: float, cash: float, value: float, initial_cash: float):
    """Position share, cash share and log(value / initial cash); 0, 0, ``BANKRUPT_REWARD`` once the value is gone."""
    if value <= 0:
        return 0.0, 0.0, BANKRUPT_REWARD
    return shares * close / value, cash / value, math.log(value / initial_cash)
