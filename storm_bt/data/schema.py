"""The one shape every market-data source produces, and the errors it raises.

Every source (yfinance download, CSV folder, synthetic market) ends in the same long panel of
daily bars, so that validation, calendar alignment and the Qlib writer are written once.
"""

from __future__ import annotations

import re

PANEL_COLUMNS: tuple[str, ...] = ("date", "instrument", "open", "high", "low", "close", "adj_close", "volume")
"""Columns of a validated panel, one row per (instrument, session)."""

BAR_COLUMNS: tuple[str, ...] = ("date", "open", "high", "low", "close", "adj_close", "volume")
"""Columns of one per-ticker CSV file (the format of ``../shared/data``)."""

PRICE_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "adj_close")

INSTRUMENT_NAME = re.compile(r"[A-Za-z0-9^][A-Za-z0-9._^-]{0,31}")
"""Ticker and benchmark names: letters, digits and ``. _ ^ -`` (``BRK-B``, ``BF.B``, ``^DJI``), at most
32 characters, starting with a letter, a digit or ``^``. Names become folder names in the provider
and fields of a tab-separated list, so no separator, whitespace or ``..`` may pass."""


class DataValidationError(ValueError):
    """Bad market data. The message names the file, the row and the field, and what was expected."""


def check_instrument_name(name: str, where: str) -> str:
    """``name`` if it is a valid instrument name, else a :class:`DataValidationError` naming ``where`` it came from."""
    if not INSTRUMENT_NAME.fullmatch(name) or ".." in name:
        raise DataValidationError(
            f"{where}: instrument name {name!r} is not allowed; use letters, digits and . _ ^ - "
            "(at most 32, starting with a letter, a digit or ^), e.g. AAPL, BRK-B, ^DJI."
        )
    return name


class DataQualityWarning(UserWarning):
    """Data that is usable but suspicious (for example a zero-volume session)."""


class DownloadError(RuntimeError):
    """A download that failed after its retries; the cache is left as it was."""
