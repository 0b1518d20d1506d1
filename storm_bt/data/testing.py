"""Fixtures shared by the tests and the benchmarks: small synthetic markets and Yahoo wire responses.

They live in the package (as SB3 keeps its test envs in ``common/envs``) so that tests,
benchmarks and users' own experiments build the same offline data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from storm_bt.data.schema import BAR_COLUMNS

__all__ = ["bars_to_csv_text", "shared_data_dir", "yahoo_chart_json", "yahoo_not_found_json"]


def shared_data_dir() -> Path | None:
    """The real development data (``../shared/data`` beside the repository, or ``$STORM_BT_SHARED_DATA``)."""
    env = os.environ.get("STORM_BT_SHARED_DATA")
    candidate = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    return candidate if (candidate / "dj30").is_dir() else None


def bars_to_csv_text(bars: pd.DataFrame) -> str:
    """Bars (with a ``date`` column or index) in the ``../shared/data`` CSV format."""
    frame = bars.reset_index() if "date" not in bars.columns else bars
    frame = frame[[c for c in BAR_COLUMNS if c in frame.columns]]
    frame = frame.assign(date=pd.to_datetime(frame["date"]).dt.strftime("%Y-%m-%d"))
    return frame.to_csv(index=False, float_format="%.6f")


def yahoo_chart_json(bars: pd.DataFrame, symbol: str) -> str:
    """Bars as Yahoo's v8 chart API answers them (daily bars stamped at the 09:30 New York open)."""
    dates = pd.DatetimeIndex(pd.to_datetime(bars["date"]))
    stamps = dates.tz_localize("America/New_York") + pd.Timedelta(hours=9, minutes=30)
    quote = {f: bars[f].astype(float).tolist() for f in ("open", "high", "low", "close")}
    quote["volume"] = bars["volume"].astype(np.int64).tolist()
    meta = {
        "currency": "USD",
        "symbol": symbol,
        "exchangeName": "NYQ",
        "instrumentType": "EQUITY",
        "gmtoffset": -18000,
        "timezone": "EST",
        "exchangeTimezoneName": "America/New_York",
        "dataGranularity": "1d",
        "priceHint": 2,
    }
    result = {
        "meta": meta,
        "timestamp": [int(ts.timestamp()) for ts in stamps],
        "indicators": {"quote": [quote], "adjclose": [{"adjclose": bars["adj_close"].astype(float).tolist()}]},
    }
    return json.dumps({"chart": {"result": [result], "error": None}})


def yahoo_not_found_json() -> str:
    """Yahoo's answer for a symbol it does not know."""
    error = {"code": "Not Found", "description": "No data found, symbol may be delisted"}
    return json.dumps({"chart": {"result": None, "error": error}})
