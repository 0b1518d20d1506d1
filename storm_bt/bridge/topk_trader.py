"""TopK-Drop in backtrader, decision for decision the rules of ``WeeklyTopkDropoutStrategy`` in Qlib's
backtest (the same :func:`topk_drop_swaps`), so that a Qlib ``pred.pkl`` can be replayed by a
second engine as a cross-check of the execution and accounting.

On a rebalance session t (the first of each ISO week, or every session), with the scores of the
session before: rank held names and the best non-held candidates, sell the held names among the
``n_drop`` worst, and spend ``risk_degree`` of the cash (after those sells and their costs)
equally on as many top candidates as free slots. Orders fill at the close of t (cheat-on-close,
Qlib's ``deal_price: close``); amounts are whole *unadjusted* shares, as Qlib's ``trade_unit: 1``.
"""

from __future__ import annotations

import math

import backtrader as bt
import pandas as pd

from storm_bt.strategies.topk_weekly import topk_drop_swaps

__all__ = ["TopkDropBacktrader"]


class TopkDropBacktrader(bt.Strategy):
    """Hold ``topk`` names by score; at most ``n_drop`` swaps per rebalance. One feed per stock,
    named by its instrument, with a ``factors`` attribute (adj_close / close by date).

    ``self.values`` holds, per session from ``start`` to ``end``, the value after that session's
    trades marked at its close (what Qlib reports as the account).
    """

    params = (
        ("scores", None),  # pd.Series indexed by (datetime, instrument)
        ("topk", 5),
        ("n_drop", 3),
        ("rebalance", "weekly"),
        ("risk_degree", 0.95),
        ("cost", 0.0005),  # per side, on the traded value (Qlib's open_cost = close_cost)
        ("start", None),
        ("end", None),
    )

    def __init__(self) -> None:
        self.feeds = {data._name: data for data in self.datas}
        self.scores = self.p.scores.sort_index()
        self.values: list[tuple[pd.Timestamp, float]] = []
        self._previous: pd.Timestamp | None = None

    def next(self) -> None:
        today = pd.Timestamp(self.datas[0].datetime.date(0))
        yesterday, self._previous = self._previous, today
        if yesterday is not None and self.p.start <= yesterday <= self.p.end:
            marked = self.broker.getcash() + sum(d.close[-1] * self.getposition(d).size for d in self.datas)
            self.values.append((yesterday, marked))  # yesterday's fills are in the cash now
        if yesterday is None or not self.p.start <= today <= self.p.end or not self._rebalances(today, yesterday):
            return
        if yesterday not in self.scores.index.get_level_values(0):
            return
        self._rebalance(self.scores.loc[yesterday].dropna())

    def _rebalances(self, today: pd.Timestamp, yesterday: pd.Timestamp) -> bool:
        if self.p.rebalance == "daily" or today == self.p.start:
            return True
        return today.isocalendar()[:2] != yesterday.isocalendar()[:2]

    def _rebalance(self, score: pd.Series) -> None:
        held_names = [name for name, data in self.feeds.items() if self.getposition(data).size]
        held, to_sell, candidates = topk_drop_swaps(score, held_names, self.p.topk, self.p.n_drop)
        cash, sold = self.broker.getcash(), 0
        for name in to_sell:
            data = self.feeds[name]
            size = self.getposition(data).size
            cash += size * data.close[0] * (1 - self.p.cost)
            self.close(data=data)
            sold += 1
        buys = candidates[: max(0, self.p.topk - (len(held) - sold))]
        if len(buys) == 0:
            return
        budget = cash * self.p.risk_degree / len(buys)
        for name in buys:
            data = self.feeds[name]
            factor = data.factors[pd.Timestamp(data.datetime.date(0))]
            size = math.floor(budget / data.close[0] * factor + 0.1) / factor  # whole unadjusted shares
            if size > 0:
                self.buy(data=data, size=size)
