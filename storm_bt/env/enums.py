"""The trading kernel's vocabulary: named codes and the tuples it takes and returns.

vectorbt's convention: ``IntEnum`` codes, which numba compiles as constants, and ``NamedTuple``
groups, which numba passes as one argument and Python reads by name. The kernel returns a status
code with every order, so a buy that cash cut short is visible instead of silent.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import numpy as np

__all__ = [
    "BANKRUPT_REWARD",
    "Accounts",
    "Action",
    "BatchStep",
    "Episodes",
    "Fill",
    "Market",
    "Order",
    "OrderStatus",
    "Rules",
    "Step",
]

BANKRUPT_REWARD = -10.0  # reward of a step that wipes out the portfolio (ends the episode)


class Fill(IntEnum):
    """When the order decided after the close of bar t fills."""

    NEXT_OPEN = 0  # at the open of bar t + 1: tradable
    CLOSE = 1  # at the close of bar t: the paper's convention, not tradable in practice


class Action(IntEnum):
    """The discrete actions."""

    SELL_ALL = 0
    HOLD = 1
    BUY_ALL = 2  # as many shares as cash affords at the fill


class OrderStatus(IntEnum):
    """What became of the order an action asked for."""

    FILLED = 0  # traded what the action asked for (a buy-all: at least one share)
    NO_ORDER = 1  # the action asked for no trade: hold, or the position is already at the target
    CUT_BY_CASH = 2  # a buy towards a continuous target filled in part: cash afforded fewer shares
    NO_CASH = 3  # a buy that cash could not afford a single share of: nothing traded


class Rules(NamedTuple):
    """The market rules as the kernel reads them (built by ``EnvConfig.rules``)."""

    discrete: bool  # actions are ``Action`` codes; otherwise a target position in [-1, 1] of the value
    fill: int  # a ``Fill`` code
    commission: float  # fraction of the traded notional, charged once per trade
    slippage: float  # fraction of the fill price a buy pays above it and a sell receives below it


class Order(NamedTuple):
    """An action sized at the fill price."""

    shares: int  # signed: positive buys
    price: float  # execution price, slippage included
    status: int  # an ``OrderStatus`` code


class Step(NamedTuple):
    """One account's step: the account after the fill, marked at the next close."""

    cash: float
    shares: int
    price: float  # execution price of the trade (the fill price when nothing traded)
    traded: int  # signed shares
    cost: float  # commission paid
    value: float  # cash + shares at the close of t + 1
    status: int  # an ``OrderStatus`` code


class Market(NamedTuple):
    """Per-asset arrays of a batch: ``features`` (A, T, E), ``opens`` and ``closes`` (A, T)."""

    features: np.ndarray
    opens: np.ndarray
    closes: np.ndarray


class Accounts(NamedTuple):
    """The batch's accounts, one row per environment, updated in place by the kernel."""

    t: np.ndarray  # current bar
    end: np.ndarray  # the bar at which the episode is truncated
    cash: np.ndarray
    shares: np.ndarray
    value: np.ndarray  # marked at the close of ``t``


class Episodes(NamedTuple):
    """How the batch restarts an account: at the next of ``starts`` (drawn ahead), all in cash."""

    starts: np.ndarray  # start bars, consumed in order
    length: int  # bars until truncation
    initial_cash: float


class BatchStep(NamedTuple):
    """What a batched step writes for each account."""

    rewards: np.ndarray  # float32: log change of the value, ``BANKRUPT_REWARD`` once it is gone
    statuses: np.ndarray  # ``OrderStatus`` codes
    dones: np.ndarray  # the episode ended: terminated or truncated
    truncated: np.ndarray  # ended by ``Accounts.end``, not by bankruptcy or the market's last bar
    observations: np.ndarray  # (n, E + account features) after the step, a restarted account's first one
    terminal_observations: np.ndarray  # row k: the last observation of the k-th episode that ended
    ended: np.ndarray  # entry k: the account of the k-th episode that ended
