"""TopK-Drop with a turnover constraint: rebalance on the first session of each week, at most n_drop swaps.

Qlib's ``TopkDropoutStrategy`` rebalances every day, and sizes its buys from the sells it
*intended*; when a sell cannot execute (suspension, limit, minimum holding time) it still buys,
and the book grows past ``topk`` (Qlib issue #809). This strategy counts only the sells that the
exchange accepts, so the book never holds more than ``topk`` names. ``rebalance="daily"`` gives
the daily version with the same fix.

Signals are read as in Qlib: the decision for session t uses the score of session t-1.
"""

from __future__ import annotations

import copy

import pandas as pd
from qlib.backtest.decision import Order, OrderDir, TradeDecisionWO
from qlib.contrib.strategy.signal_strategy import BaseSignalStrategy

__all__ = ["WeeklyTopkDropoutStrategy", "topk_drop_swaps"]

REBALANCE = ("weekly", "daily")


def topk_drop_swaps(score: pd.Series, held: list[str], topk: int, n_drop: int) -> tuple[pd.Index, pd.Index, pd.Index]:
    """TopK-Drop's choice for one rebalance: ``(held, to_sell, candidates)``.

    ``held`` ranked by score (unscored names last); ``to_sell`` the held names among the ``n_drop``
    worst of held + best non-held candidates; ``candidates`` the best non-held names, best first.
    Whether a sell executes, and so how many candidates are bought, is the caller's to decide.
    """
    held = score.reindex(held).sort_values(ascending=False).index
    candidates = score[~score.index.isin(held)].sort_values(ascending=False).index
    candidates = candidates[: max(0, n_drop + topk - len(held))]
    ranked = score.reindex(held.union(candidates)).sort_values(ascending=False).index
    worst = ranked[len(ranked) - n_drop :] if n_drop else ranked[:0]
    return held, held[held.isin(worst)], candidates


class WeeklyTopkDropoutStrategy(BaseSignalStrategy):
    """Hold the ``topk`` best-scored names; swap at most ``n_drop`` of them per rebalance.

    :param topk: names held after a rebalance.
    :param n_drop: most names sold (and replaced) per rebalance.
    :param rebalance: ``"weekly"`` (first trading session of each ISO week) or ``"daily"``.
    :param hold_thresh: sessions a name must be held before it may be sold.
    :param forbid_all_trade_at_limit: as in Qlib: no trade at all on a stock at its price limit.
    """

    def __init__(
        self,
        *,
        topk: int,
        n_drop: int,
        rebalance: str = "weekly",
        hold_thresh: int = 1,
        forbid_all_trade_at_limit: bool = True,
        **kwargs,
    ) -> None:
        if rebalance not in REBALANCE:
            raise ValueError(f"rebalance must be one of {REBALANCE}, got {rebalance!r}.")
        if topk < 1 or not 0 <= n_drop <= topk:
            raise ValueError(f"Expected topk >= 1 and 0 <= n_drop <= topk, got topk={topk}, n_drop={n_drop}.")
        super().__init__(**kwargs)
        self.topk = topk
        self.n_drop = n_drop
        self.rebalance = rebalance
        self.hold_thresh = hold_thresh
        self.forbid_all_trade_at_limit = forbid_all_trade_at_limit

    def is_rebalance_step(self, trade_step: int) -> bool:
        """Daily: always. Weekly: the first step, and any step in another ISO week than the step before."""
        if self.rebalance == "daily" or trade_step == 0:
            return True
        now, _ = self.trade_calendar.get_step_time(trade_step)
        before, _ = self.trade_calendar.get_step_time(trade_step - 1)
        return now.isocalendar()[:2] != before.isocalendar()[:2]

    def generate_trade_decision(self, execute_result=None) -> TradeDecisionWO:
        step = self.trade_calendar.get_trade_step()
        if not self.is_rebalance_step(step):
            return TradeDecisionWO([], self)
        start, end = self.trade_calendar.get_step_time(step)
        score = self.signal.get_signal(*self.trade_calendar.get_step_time(step, shift=1))
        if score is None:
            return TradeDecisionWO([], self)
        if isinstance(score, pd.DataFrame):
            score = score.iloc[:, 0]
        score = score.dropna()
        position = copy.deepcopy(self.trade_position)
        held, to_sell, candidates = topk_drop_swaps(score, position.get_stock_list(), self.topk, self.n_drop)
        sells, cash = [], position.get_cash()
        for code in to_sell:
            if not self._tradable(code, start, end, OrderDir.SELL):
                continue
            if position.get_stock_count(code, bar=self.trade_calendar.get_freq()) < self.hold_thresh:
                continue
            order = Order(code, position.get_stock_amount(code), Order.SELL, start, end)
            if self.trade_exchange.check_order(order):
                trade_value, trade_cost, _ = self.trade_exchange.deal_order(order, position=position)
                cash += trade_value - trade_cost
                sells.append(order)
        n_buy = self.topk - (len(held) - len(sells))  # only sells that execute free a slot (Qlib #809)
        buys = self._buy_orders(candidates[: max(0, n_buy)], cash, start, end)
        return TradeDecisionWO(sells + buys, self)

    def _tradable(self, code: str, start: pd.Timestamp, end: pd.Timestamp, direction: int) -> bool:
        return self.trade_exchange.is_stock_tradable(
            stock_id=code,
            start_time=start,
            end_time=end,
            direction=None if self.forbid_all_trade_at_limit else direction,
        )

    def _buy_orders(self, codes: pd.Index, cash: float, start: pd.Timestamp, end: pd.Timestamp) -> list[Order]:
        """Equal cash per new name, rounded to the exchange's trade unit."""
        if len(codes) == 0:
            return []
        budget = cash * self.risk_degree / len(codes)
        orders = []
        for code in codes:
            if not self._tradable(code, start, end, OrderDir.BUY):
                continue
            price = self.trade_exchange.get_deal_price(code, start, end, direction=OrderDir.BUY)
            factor = self.trade_exchange.get_factor(stock_id=code, start_time=start, end_time=end)
            amount = self.trade_exchange.round_amount_by_trade_unit(budget / price, factor)
            if amount > 0:
                orders.append(Order(code, amount, Order.BUY, start, end))
        return orders
