"""Replay a Qlib prediction (``pred.pkl``) with TopK-Drop in backtrader: a second engine for the
portfolio backtest, to cross-check Qlib's account curve."""

from __future__ import annotations

import pandas as pd

from storm_bt.bridge.broker import make_cerebro
from storm_bt.bridge.feeds import factor_feed
from storm_bt.bridge.topk_trader import TopkDropBacktrader
from storm_bt.env.trading_env import EnvConfig

__all__ = ["replay_topk"]


def replay_topk(
    scores: pd.Series,
    bars: dict[str, pd.DataFrame],
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    topk: int,
    n_drop: int,
    rebalance: str = "weekly",
    cost: float = 0.0005,
    account: float = 1_000_000.0,
    risk_degree: float = 0.95,
) -> pd.Series:
    """Value after each session's trades in [start, end], marked at its close.

    :param scores: predictions indexed by (datetime, instrument); the decision at t uses the
        scores of the session before t, as Qlib's signal strategies do.
    :param bars: adjusted bars per instrument (``storm_bt.agents.states.load_bars``) covering the
        session before ``start`` through the session after ``end``.
    """
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    calendar = next(iter(bars.values())).index
    first = calendar.searchsorted(start) - 1
    last = calendar.searchsorted(end, side="right")
    if first < 0 or last >= len(calendar):
        raise ValueError(f"The bars must cover the session before {start.date()} and the one after {end.date()}.")
    dates = calendar[first : last + 1]
    cerebro = make_cerebro(EnvConfig(initial_cash=account, commission_bps=cost * 1e4, slippage_bps=0.0, fill="close"))
    for name, frame in sorted(bars.items()):
        window = frame.reindex(dates)
        if window[["open", "close"]].isna().any().any():
            missing = window.index[window["close"].isna()][0].date()
            raise ValueError(f"{name} has no bar on {missing}; the backtrader replay needs complete bars.")
        feed = factor_feed(dates, window["open"], window["close"], name=name)
        feed.factors = window["factor"]
        cerebro.adddata(feed)
    cerebro.addstrategy(
        TopkDropBacktrader,
        scores=scores,
        topk=topk,
        n_drop=n_drop,
        rebalance=rebalance,
        risk_degree=risk_degree,
        cost=cost,
        start=start,
        end=end,
    )
    strategy = cerebro.run(runonce=False)[0]
    dates_, values = zip(*strategy.values, strict=True)
    return pd.Series(values, index=pd.DatetimeIndex(dates_, name="datetime"), name="account")
