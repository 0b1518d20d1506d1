"""The NYSE trading calendar: the one time axis every instrument is aligned to.

Backed by ``pandas_market_calendars`` (holidays, special closures such as 2012-10-29/30 and
national days of mourning), so no session list is written by hand.
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd
import pandas_market_calendars as mcal

__all__ = ["next_session", "nyse_sessions"]


@lru_cache(maxsize=32)
def _sessions(start: str, end: str) -> pd.DatetimeIndex:
    days = mcal.get_calendar("NYSE").valid_days(start_date=start, end_date=end)
    return pd.DatetimeIndex(days.tz_localize(None).normalize(), name="date")


def nyse_sessions(start: str | pd.Timestamp, end: str | pd.Timestamp) -> pd.DatetimeIndex:
    """NYSE sessions from ``start`` to ``end``, both inclusive, as tz-naive midnight timestamps."""
    start_ts, end_ts = pd.Timestamp(start), pd.Timestamp(end)
    if end_ts < start_ts:
        raise ValueError(f"Calendar range is empty: start {start_ts.date()} is after end {end_ts.date()}.")
    return _sessions(str(start_ts.date()), str(end_ts.date()))


def next_session(day: str | pd.Timestamp) -> pd.Timestamp:
    """The first NYSE session strictly after ``day``."""
    day_ts = pd.Timestamp(day)
    return nyse_sessions(day_ts + pd.Timedelta(days=1), day_ts + pd.Timedelta(days=15))[0]
