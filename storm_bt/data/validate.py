"""Validation of one instrument's daily bars, with errors that name the file, row and field.

Rows are counted as lines of the file, the header being row 1, so a message can be checked by
opening the file in an editor. Checks run from the syntactic (columns, numbers, dates) to the
semantic (calendar, gaps, history length), and each reports how many rows share the problem.
"""

from __future__ import annotations

import re
import warnings
from typing import Literal

import numpy as np
import pandas as pd

from storm_bt.data.calendar import nyse_sessions
from storm_bt.data.schema import BAR_COLUMNS, PRICE_FIELDS, DataQualityWarning, DataValidationError

__all__ = ["GapPolicy", "align_to_calendar", "check_bars", "normalize_columns", "parse_bars"]

GapPolicy = Literal["raise", "ffill", "nan"]
"""What to do with NYSE sessions missing inside an instrument's history: fail (default), carry the
last close forward with zero volume, or keep the session as NaN for downstream handling."""

_ALIASES = {"adj close": "adj_close", "adjclose": "adj_close", "adjusted close": "adj_close", "datetime": "date"}
_MISSING_TOKENS = {"", "nan", "NaN", "NAN", "null", "NULL", "None", "NA", "N/A", "#N/A"}
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _where(source: str, line: int, field: str | None = None) -> str:
    return f"{source}, row {line}" + (f", field '{field}'" if field else "")


def _fail(source: str, lines: np.ndarray, field: str | None, what: str) -> DataValidationError:
    more = f" ({len(lines)} rows have this problem)" if len(lines) > 1 else ""
    return DataValidationError(f"{_where(source, int(lines[0]), field)}: {what}{more}")


def normalize_columns(columns: pd.Index, source: str) -> dict[str, str]:
    """Map a file's header to the canonical bar columns (ours, or Yahoo's ``Adj Close`` style)."""
    mapping: dict[str, str] = {}
    for col in columns:
        key = str(col).strip().lower()
        key = _ALIASES.get(key, key).replace(" ", "_")
        if key in BAR_COLUMNS:
            mapping[col] = key
    missing = [c for c in BAR_COLUMNS if c not in mapping.values()]
    if missing:
        raise DataValidationError(
            f"{source}: missing column(s) {', '.join(repr(m) for m in missing)}. Expected the header "
            f"{','.join(BAR_COLUMNS)} or Yahoo's Date,Open,High,Low,Close,Adj Close,Volume; got {list(columns)}."
        )
    return mapping


def parse_bars(raw: pd.DataFrame, source: str, first_row: int = 2) -> pd.DataFrame:
    """Turn a frame of strings (read with ``dtype=str``) into typed bars with a ``row`` column.

    :param raw: the file's rows as strings, header already consumed.
    :param source: file name used in error messages.
    :param first_row: file line of the first data row (2 when the header is one line).
    """
    if raw.empty:
        raise DataValidationError(f"{source}: the file has a header but no rows.")
    mapping = normalize_columns(raw.columns, source)
    text = raw.rename(columns=mapping)[list(BAR_COLUMNS)].apply(lambda s: s.astype(str).str.strip())
    rows = np.arange(first_row, first_row + len(text))
    out = pd.DataFrame({"row": rows})

    dates = text["date"]
    ok = dates.str.match(_ISO_DATE)
    parsed = pd.to_datetime(dates.where(ok).str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        first = dates[bad].iloc[0]
        raise _fail(source, rows[bad], "date", f"{first!r} is not a date in YYYY-MM-DD form")
    out["date"] = parsed.to_numpy()

    for field in BAR_COLUMNS[1:]:
        col = text[field]
        missing = col.isin(_MISSING_TOKENS).to_numpy()
        if missing.any():
            raise _fail(source, rows[missing], field, "missing value (NaN or empty); every bar needs all fields")
        values = pd.to_numeric(col, errors="coerce")
        bad = values.isna().to_numpy()
        if bad.any():
            raise _fail(source, rows[bad], field, f"{col[bad].iloc[0]!r} is not a number")
        out[field] = values.to_numpy(dtype=np.float64)
    return out


MAX_PRICE = 1e6  # above any listed share (BRK.A trades near 7e5): a larger price is a unit or parsing error
SPIKE_RATIO = 10.0  # a close 10x above or below the previous one in one session is worth a warning


def _check_values(bars: pd.DataFrame, source: str) -> None:
    rows = bars["row"].to_numpy()
    for field in PRICE_FIELDS:
        values = bars[field].to_numpy()
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            raise _fail(source, rows[bad], field, f"price must be a positive finite number, got {values[bad][0]}")
        huge = values >= MAX_PRICE
        if huge.any():
            what = f"price {values[huge][0]:g} is not plausible for a share (at least {MAX_PRICE:g}); check the units"
            raise _fail(source, rows[huge], field, what)
    volume = bars["volume"].to_numpy()
    bad = ~np.isfinite(volume) | (volume < 0)
    if bad.any():
        raise _fail(source, rows[bad], "volume", f"volume must be non-negative and finite, got {volume[bad][0]}")
    inverted = (bars["low"] > bars["high"]).to_numpy()
    if inverted.any():
        i = np.flatnonzero(inverted)[0]
        what = f"low ({bars['low'].iat[i]}) is above high ({bars['high'].iat[i]})"
        raise _fail(source, rows[inverted], "low", what)
    for field in ("open", "close"):
        low, high, values = (bars[c].to_numpy() for c in ("low", "high", field))
        outside = (values > high * (1 + 1e-6)) | (values < low * (1 - 1e-6))
        if outside.any():
            i = np.flatnonzero(outside)[0]
            what = f"{field} ({values[i]}) lies outside the day's range low {low[i]} .. high {high[i]}"
            raise _fail(source, rows[outside], field, what)
    jump = np.abs(np.diff(np.log(bars["close"].to_numpy()))) >= np.log(SPIKE_RATIO)
    if jump.any():
        i = np.flatnonzero(jump)[0] + 1
        warnings.warn(
            f"{_where(source, int(rows[i]), 'close')}: close moves from {bars['close'].iat[i - 1]} to "
            f"{bars['close'].iat[i]} in one session ({jump.sum()} such move(s)); kept, but check for an "
            "unadjusted split or a typo.",
            DataQualityWarning,
            stacklevel=3,
        )
    zero = volume == 0
    if zero.any():
        days = ", ".join(str(d.date()) for d in bars.loc[zero, "date"].iloc[:3])
        warnings.warn(
            f"{_where(source, int(rows[zero][0]), 'volume')}: zero volume on {zero.sum()} session(s) ({days}...); "
            "kept as is, but volume-based features are unreliable there.",
            DataQualityWarning,
            stacklevel=3,
        )


def _check_dates(bars: pd.DataFrame, source: str) -> None:
    rows, dates = bars["row"].to_numpy(), bars["date"]
    dup = dates.duplicated(keep="first").to_numpy()
    if dup.any():
        i = np.flatnonzero(dup)[0]
        first = rows[np.flatnonzero((dates == dates.iat[i]).to_numpy())[0]]
        raise _fail(source, rows[dup], "date", f"duplicate date {dates.iat[i].date()} (first seen on row {first})")
    back = (dates.diff() < pd.Timedelta(0)).to_numpy()
    if back.any():
        i = np.flatnonzero(back)[0]
        what = f"{dates.iat[i].date()} comes after {dates.iat[i - 1].date()} (row {rows[i - 1]}); dates must ascend"
        raise _fail(source, rows[back], "date", what)
    future = (dates > pd.Timestamp.today().normalize()).to_numpy()
    if future.any():
        raise _fail(source, rows[future], "date", f"{dates[future].iat[0].date()} is in the future")
    sessions = nyse_sessions(dates.iat[0], dates.iat[-1])
    off = ~dates.isin(sessions).to_numpy()
    if off.any():
        what = f"{dates[off].iat[0].date()} ({dates[off].iat[0].day_name()}) is not an NYSE trading session"
        raise _fail(source, rows[off], "date", what)


def check_bars(bars: pd.DataFrame, source: str, min_history: int = 1) -> pd.DataFrame:
    """Check prices, volumes and dates of parsed bars; return them indexed by date.

    :param min_history: fewest sessions an instrument must have to be usable.
    :raises DataValidationError: on the first problem, naming file, row and field.
    """
    _check_values(bars, source)
    _check_dates(bars, source)
    if len(bars) < min_history:
        raise DataValidationError(
            f"{source}: only {len(bars)} sessions of history ({bars['date'].iat[0].date()} .. "
            f"{bars['date'].iat[-1].date()}), fewer than min_history={min_history}; "
            "drop the ticker or lower min_history."
        )
    return bars.set_index("date")


def align_to_calendar(bars: pd.DataFrame, source: str, on_gap: GapPolicy = "raise") -> pd.DataFrame:
    """Reindex checked bars (indexed by date) on every NYSE session between their first and last date.

    :param on_gap: ``"raise"`` fails on a missing session; ``"ffill"`` carries the last close into
        open/high/low/close/adj_close with zero volume; ``"nan"`` keeps the session with NaN fields.
    """
    if on_gap not in ("raise", "ffill", "nan"):
        raise ValueError(f"on_gap must be 'raise', 'ffill' or 'nan', got {on_gap!r}.")
    sessions = nyse_sessions(bars.index[0], bars.index[-1])
    if len(sessions) == len(bars):
        return bars
    missing = sessions.difference(bars.index)
    if on_gap == "raise":
        after = bars.index[bars.index < missing[0]][-1]
        row = int(bars.loc[after, "row"])
        raise DataValidationError(
            f"{_where(source, row, 'date')}: {len(missing)} NYSE session(s) missing between "
            f"{bars.index[0].date()} and {bars.index[-1].date()}, first {missing[0].date()} (right after this row). "
            "Fill the file, or choose on_gap='ffill' (carry the last close, zero volume) or on_gap='nan'."
        )
    aligned = bars.reindex(sessions)
    if on_gap == "ffill":
        close = aligned["close"].ffill()
        gap = aligned["open"].isna()
        for field in ("open", "high", "low", "close"):
            aligned[field] = aligned[field].fillna(close)
        aligned["adj_close"] = aligned["adj_close"].fillna(close * (aligned["adj_close"] / aligned["close"]).ffill())
        aligned.loc[gap, "volume"] = 0.0
    return aligned.rename_axis("date")
