"""backtrader data feeds that carry a per-date feature vector (STORM factors) beside the bars."""

from __future__ import annotations

from functools import cache

import backtrader as bt
import numpy as np
import pandas as pd

__all__ = ["FEATURE_PREFIX", "factor_feed"]

FEATURE_PREFIX = "f"


@cache
def _feed_class(width: int) -> type[bt.feeds.PandasData]:
    """A PandasData subclass with ``width`` extra lines ``f0 .. f{width-1}`` (one class per width)."""
    names = tuple(f"{FEATURE_PREFIX}{i}" for i in range(width))
    return type(
        f"FactorData{width}",
        (bt.feeds.PandasData,),
        {"lines": names, "params": tuple((name, name) for name in names), "feature_names": names},
    )


def factor_feed(
    dates: pd.DatetimeIndex,
    opens: np.ndarray,
    closes: np.ndarray,
    features: np.ndarray | None = None,
    highs: np.ndarray | None = None,
    lows: np.ndarray | None = None,
    volumes: np.ndarray | None = None,
    name: str = "stock",
) -> bt.feeds.PandasData:
    """One stock's daily bars, plus ``features`` (T, E) as lines ``f0 ..`` when given.

    Highs and lows default to the larger and smaller of open and close; only the replay's fill
    rules read prices, and those use the open or the close.
    """
    opens, closes = np.asarray(opens, dtype=np.float64), np.asarray(closes, dtype=np.float64)
    frame = pd.DataFrame(
        {
            "open": opens,
            "high": np.maximum(opens, closes) if highs is None else highs,
            "low": np.minimum(opens, closes) if lows is None else lows,
            "close": closes,
            "volume": np.zeros(len(closes)) if volumes is None else volumes,
            "openinterest": np.zeros(len(closes)),
        },
        index=pd.DatetimeIndex(dates, name="datetime"),
    )
    width = 0 if features is None else np.asarray(features).shape[1]
    if width:
        columns = [f"{FEATURE_PREFIX}{i}" for i in range(width)]
        frame = pd.concat([frame, pd.DataFrame(np.asarray(features, dtype=np.float64), frame.index, columns)], axis=1)
    return _feed_class(width)(dataname=frame, name=name)
