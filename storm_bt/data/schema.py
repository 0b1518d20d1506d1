"""The one shape every market-data source produces, and the errors it raises.

Every source (yfinance download, CSV folder, synthetic market) ends in the same long panel of
daily bars, so that validation, calendar alignment and the Qlib writer are written once.
"""

from __future__ import annotations

PANEL_COLUMNS: tuple[str, ...] = ("date", "instrument", "open", "high", "low", "close", "adj_close", "volume")
"""Columns of a validated panel, one row per (instrument, session)."""

BAR_COLUMNS: tuple[str, ...] = ("date", "open", "high", "low", "close", "adj_close", "volume")
"""Columns of one per-ticker CSV file (the format of ``../shared/data``)."""

PRICE_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "adj_close")


class DataValidationError(ValueError):
    """Bad market data. The message names the file, the row and the field, and what was expected."""


class DataQualityWarning(UserWarning):
    """Data that is usable but suspicious (for example a zero-volume session)."""


class DownloadError(RuntimeError):
    """A download that failed after its retries; the cache is left as it was."""
