"""backtrader strategy that trades one stock the way the env does, asking a policy every bar."""

from __future__ import annotations

from collections.abc import Callable

import backtrader as bt
import numpy as np
import pandas as pd

from storm_bt.env.kernel import account_features_nb, order_nb
from storm_bt.env.trading_env import EnvConfig

__all__ = ["PolicyTrader"]

Policy = Callable[[np.ndarray], object]


class PolicyTrader(bt.Strategy):
    """After each close, build the env's observation (the feed's feature lines, then the account
    features) and ask ``policy`` for an action; size the order with the env's own sizing rule at
    the fill price. With ``fill="next_open"`` the order is placed in ``next_open`` of the next bar
    (cheat-on-open: sized at that open, filled at it); with ``fill="close"`` it fills at this close.

    Records per bar: date, action and the account after the bar (``self.records``); fills in
    ``self.fills``.
    """

    params = (("policy", None), ("config", EnvConfig()))

    def __init__(self) -> None:
        if self.p.policy is None:
            raise ValueError("PolicyTrader needs a policy: a callable observation -> action.")
        self._features = [getattr(self.data.lines, name) for name in getattr(self.data, "feature_names", ())]
        self._pending: float | None = None
        self.records: list[dict] = []
        self.fills: list[dict] = []

    def observation(self) -> np.ndarray:
        """Exactly the env's observation at this bar, float32."""
        cash, value = self.broker.getcash(), self.broker.getvalue()
        account = account_features_nb(self.position.size, self.data.close[0], cash, value, self.p.config.initial_cash)
        return np.array([line[0] for line in self._features] + list(account), dtype=np.float32)

    def next(self) -> None:
        last_bar = len(self.data) >= self.data.buflen()
        action = None if last_bar else float(np.asarray(self.p.policy(self.observation())).reshape(-1)[0])
        self.records.append(
            {
                "date": pd.Timestamp(self.data.datetime.date(0)),
                "value": self.broker.getvalue(),
                "cash": self.broker.getcash(),
                "shares": self.position.size,
                "action": action,
            }
        )
        if action is None:
            return
        if self.p.config.fill == "close":
            self._order(action, price=self.data.close[0], close_now=self.data.close[0])
        else:
            self._pending = action

    def next_open(self) -> None:
        if self._pending is not None:
            self._order(self._pending, price=self.data.open[0], close_now=self.data.close[-1])
            self._pending = None

    def notify_order(self, order: bt.Order) -> None:
        if order.status == order.Completed:
            self.fills.append(
                {
                    "date": pd.Timestamp(bt.num2date(order.executed.dt).date()),
                    "shares": order.executed.size,
                    "price": order.executed.price,
                    "commission": order.executed.comm,
                }
            )
        elif order.status in (order.Margin, order.Rejected):
            raise RuntimeError(f"backtrader refused an order the env would fill: {order}")

    def _order(self, action: float, price: float, close_now: float) -> None:
        order = order_nb(self.p.config.rules, action, self.broker.getcash(), int(self.position.size), close_now, price)
        if order.shares > 0:
            self.buy(size=order.shares)
        elif order.shares < 0:
            self.sell(size=-order.shares)
