"""A backtrader data feed over numpy arrays that carries a per-date feature vector beside the bars.

backtrader's ``PandasData`` reads every cell through ``DataFrame.iloc``; with a few hundred
factor columns that is most of a replay's time. This feed keeps the arrays and copies one row per
bar into the lines, the documented way to extend ``DataBase`` (override ``_load``).
"""

from __future__ import annotations

from functools import cache

import backtrader as bt
import numpy as np
import pandas as pd

__all__ = ["FEATURE_PREFIX", "factor_feed"]

FEATURE_PREFIX = "f"


class _ArrayFeed(bt.feed.DataBase):
    """Bars (and feature lines, in subclasses) from arrays set by :func:`factor_feed`."""

    feature_names: tuple[str, ...] = ()

    def start(self) -> None:
        super().start()
        self._row = -1
        self._feature_lines = [getattr(self.lines, name) for name in self.feature_names]

    def _load(self) -> bool:
        self._row += 1
        if self._row >= len(self._when):
            return False
        i = self._row
        self.lines.datetime[0] = self._when[i]
        self.lines.open[0], self.lines.high[0] = self._bars[i, 0], self._bars[i, 1]
        self.lines.low[0], self.lines.close[0] = self._bars[i, 2], self._bars[i, 3]
        self.lines.volume[0], self.lines.openinterest[0] = self._bars[i, 4], 0.0
        for line, value in zip(self._feature_lines, self._features[i], strict=True):
            line[0] = value
        return True


@cache
def _feed_class(width: int) -> type[_ArrayFeed]:
    """A feed class with ``width`` extra lines ``f0 .. f{width-1}`` (one class per width)."""
    names = tuple(f"{FEATURE_PREFIX}{i}" for i in range(width))
    return type(f"FactorFeed{width}", (_ArrayFeed,), {"lines": names, "feature_names": names})


def factor_feed(
    dates: pd.DatetimeIndex,
    opens: np.ndarray,
    closes: np.ndarray,
    features: np.ndarray | None = None,
    highs: np.ndarray | None = None,
    lows: np.ndarray | None = None,
    volumes: np.ndarray | None = None,
    name: str = "stock",
) -> _ArrayFeed:
    """One stock's daily bars, plus ``features`` (T, E) as lines ``f0 ..`` when given.

    Highs and lows default to the larger and smaller of open and close; only the replay's fill
    rules read prices, and those use the open or the close.
    """
    opens, closes = np.asarray(opens, dtype=np.float64), np.asarray(closes, dtype=np.float64)
    n = len(closes)
    bars = np.column_stack(
        [
            opens,
            np.maximum(opens, closes) if highs is None else highs,
            np.minimum(opens, closes) if lows is None else lows,
            closes,
            np.zeros(n) if volumes is None else volumes,
        ]
    ).astype(np.float64)
    values = np.zeros((n, 0)) if features is None else np.asarray(features, dtype=np.float64)
    feed = _feed_class(values.shape[1])(name=name)
    feed._when = [bt.date2num(day.to_pydatetime()) for day in pd.DatetimeIndex(dates)]
    feed._bars, feed._features = bars, values
    return feed
