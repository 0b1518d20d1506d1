"""What one stock's agent trades on: per-date state features beside adjusted open and close prices.

Two kinds of state, built for the same dates so that agents differ only in what they see:

* ``factors``: STORM's pooled factor vector of the stock (read from a factor store);
* ``tokens``: STORM's full token set for the stock (its TS tokens and the day's CS tokens);
* ``prices``: a handful of price and volume features (the "no STORM" baseline), each computed
  from bars up to and including the date, never after.

Features are standardised with the mean and standard deviation of the *train* segment only
(:class:`FeatureScaler`); evaluation and replays refit it on that same segment, so they see the
numbers the agent was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from storm_bt.data.csv_source import load_csv_dir
from storm_bt.data.provider import provider_fields
from storm_bt.factors.store import FactorStore

__all__ = ["FeatureScaler", "StockMarket", "factor_states", "load_bars", "price_states"]

STATES = ("factors", "tokens", "prices")


def load_bars(csv_dir: str | Path, stocks: list[str]) -> dict[str, pd.DataFrame]:
    """Per-stock bars (date-indexed) with split- and dividend-adjusted open, high, low, close and volume,
    and the adjustment ``factor`` (adj_close / close, as in the Qlib provider)."""
    fields = provider_fields(load_csv_dir(csv_dir, tickers=stocks))
    names = ("open", "high", "low", "close", "volume", "factor")
    return {
        str(stock): pd.DataFrame({name: fields[name][stock] for name in names}).dropna(subset=["close"])
        for stock in fields["close"].columns
    }


def price_states(bars: pd.DataFrame) -> pd.DataFrame:
    """Return, trend, volatility and volume features known at each close (first days are 0)."""
    close, log_close = bars["close"], np.log(bars["close"])
    r1 = log_close.diff()
    features = {
        "ret_1": r1,
        "ret_5": log_close.diff(5),
        "ret_20": log_close.diff(20),
        "ret_60": log_close.diff(60),
        "vol_20": r1.rolling(20, min_periods=2).std(),
        "ma_gap_20": close / close.rolling(20, min_periods=1).mean() - 1.0,
        "range": (bars["high"] - bars["low"]) / close,
        "gap": np.log(bars["open"]) - log_close.shift(1),
        "volume_20": np.log1p(bars["volume"]) - np.log1p(bars["volume"]).rolling(20, min_periods=1).mean(),
    }
    return pd.DataFrame(features, index=bars.index).replace([np.inf, -np.inf], np.nan).fillna(0.0)


def factor_states(store: FactorStore, stock: str, dates: pd.DatetimeIndex, tokens: bool = False) -> pd.DataFrame:
    """The stock's STORM state on ``dates``: the pooled vector, or with ``tokens`` its full token set
    (its TS tokens and the day's CS tokens, as in the paper); every date must be in the store."""
    states = (store.tokens if tokens else store.pooled)(stock, dates[0], dates[-1])
    missing = dates.difference(states.dropna().index)
    if len(missing):
        raise ValueError(
            f"The factor store has no {stock} factors for {len(missing)} trading date(s), first "
            f"{missing[0].date()}; export factors over the whole range (storm-bt factors export)."
        )
    return states.loc[dates]


@dataclass(frozen=True)
class FeatureScaler:
    """Per-feature mean and standard deviation of the train segment."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> FeatureScaler:
        std = features.std(axis=0)
        return cls(features.mean(axis=0), np.where(std > 1e-12, std, 1.0))

    def transform(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std).astype(np.float32)


@dataclass(frozen=True)
class StockMarket:
    """One stock over a date range: state features (T, E) and adjusted opens and closes (T,)."""

    stock: str
    dates: pd.DatetimeIndex
    features: np.ndarray
    opens: np.ndarray
    closes: np.ndarray

    @classmethod
    def build(cls, stock: str, bars: pd.DataFrame, states: pd.DataFrame) -> StockMarket:
        dates = bars.index.intersection(states.index)
        return cls(
            stock,
            pd.DatetimeIndex(dates),
            states.loc[dates].to_numpy(np.float64),
            bars.loc[dates, "open"].to_numpy(np.float64),
            bars.loc[dates, "close"].to_numpy(np.float64),
        )

    def between(self, start: str | pd.Timestamp, end: str | pd.Timestamp) -> StockMarket:
        """The dates in [start, end] (both inclusive)."""
        keep = (self.dates >= pd.Timestamp(start)) & (self.dates <= pd.Timestamp(end))
        if keep.sum() < 2:
            raise ValueError(f"{self.stock} has {int(keep.sum())} trading date(s) in {start} .. {end}; need 2 or more.")
        return StockMarket(self.stock, self.dates[keep], self.features[keep], self.opens[keep], self.closes[keep])

    def scaled(self, scaler: FeatureScaler) -> StockMarket:
        return StockMarket(self.stock, self.dates, scaler.transform(self.features), self.opens, self.closes)
