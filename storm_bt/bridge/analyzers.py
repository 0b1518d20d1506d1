"""backtrader analyzers that report through :mod:`storm_bt.metrics`, so both engines share definitions."""

from __future__ import annotations

from typing import Any

import backtrader as bt
import pandas as pd

from storm_bt.metrics import portfolio_metrics

__all__ = ["PaperMetrics"]


class PaperMetrics(bt.Analyzer):
    """Portfolio value after every bar and the paper's metrics (APY, CW, CR, ASR, MDD, AVO) of it."""

    def start(self) -> None:
        self._dates: list[pd.Timestamp] = []
        self._values: list[float] = []

    def next(self) -> None:
        self._dates.append(pd.Timestamp(self.data.datetime.date(0)))
        self._values.append(self.strategy.broker.getvalue())

    def get_analysis(self) -> dict[str, Any]:
        values = pd.Series(self._values, index=pd.DatetimeIndex(self._dates, name="date"), name="value")
        returns = values.pct_change().dropna()
        return {"values": values, "metrics": portfolio_metrics(returns) if len(returns) >= 2 else {}}
