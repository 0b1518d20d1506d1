"""Daily bars from Yahoo Finance (via yfinance) into a per-ticker CSV cache that resumes.

Each ticker is written to ``<out>/<TICKER>.csv`` (the ``../shared/data`` format) as soon as it
is downloaded, and recorded in ``<out>/_download.json`` with the range that was asked for. A
second run skips every ticker whose cached range covers the request, so an interrupted download
continues where it stopped. Network failures are retried with exponential back-off; when they
persist the run stops with :class:`DownloadError` and every file already in the cache stays as
it was (files are only ever replaced atomically, after their new content validated).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import curl_cffi.requests.exceptions as curl_errors
import pandas as pd
import requests
import yfinance as yf
from tqdm.auto import tqdm

from storm_bt.data.schema import BAR_COLUMNS, DataValidationError, DownloadError
from storm_bt.data.validate import check_bars, parse_bars
from storm_bt.io import atomic_write_text

__all__ = ["DownloadReport", "download_tickers", "yahoo_history"]

log = logging.getLogger(__name__)

MANIFEST = "_download.json"
_TRANSIENT = (
    requests.exceptions.RequestException,
    curl_errors.RequestException,
    ConnectionError,
    TimeoutError,
    yf.exceptions.YFRateLimitError,
)
_NO_DATA = (yf.exceptions.YFPricesMissingError, yf.exceptions.YFTzMissingError, yf.exceptions.YFInvalidPeriodError)


@dataclass
class DownloadReport:
    """Which tickers were fetched now, which came from the cache, which Yahoo does not know."""

    downloaded: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def yahoo_history(ticker: str, start: str, end: str, session: Any = None, timeout: float = 30.0) -> pd.DataFrame:
    """Raw daily bars of ``ticker`` for ``start..end`` (inclusive) as yfinance returns them.

    Prices are Yahoo's split-adjusted OHLC with ``Adj Close`` (``auto_adjust=False``).
    """
    last = pd.Timestamp(end) + pd.Timedelta(days=1)  # yfinance's end is exclusive
    debug = yf.config.debug
    hide = debug.hide_exceptions
    debug.hide_exceptions = False  # raise instead of returning an empty frame, to tell failures apart
    try:
        history = yf.Ticker(ticker, session=session).history(
            start=start, end=f"{last:%Y-%m-%d}", interval="1d", auto_adjust=False, actions=False, timeout=timeout
        )
    finally:
        debug.hide_exceptions = hide
    dates = history.index.tz_localize(None).normalize() if history.index.tz is not None else history.index
    return history[(dates >= pd.Timestamp(start)) & (dates <= pd.Timestamp(end))]


def _to_bars(history: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """yfinance's frame in the CSV format, validated (values and calendar; gaps are left to ingest)."""
    if history.empty:
        raise DataValidationError(f"Yahoo returned no rows for {ticker}.")
    frame = history.reset_index()
    frame = frame.rename(columns={frame.columns[0]: "Date"})
    frame["Date"] = pd.to_datetime(frame["Date"]).dt.strftime("%Y-%m-%d")
    raw = frame[["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]].astype(str)
    bars = check_bars(parse_bars(raw, f"{ticker} (Yahoo response)"), f"{ticker} (Yahoo response)")
    return bars.reset_index()[list(BAR_COLUMNS)]


def _load_manifest(out: Path) -> dict[str, dict[str, str]]:
    path = out / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataValidationError(f"{path}: corrupt download manifest ({e}); delete it to re-download.") from e


def _covered(entry: dict[str, str] | None, out: Path, ticker: str, start: str, end: str) -> bool:
    return (
        entry is not None
        and (out / f"{ticker}.csv").exists()
        and pd.Timestamp(entry["start"]) <= pd.Timestamp(start)
        and pd.Timestamp(entry["end"]) >= pd.Timestamp(end)
    )


def _fetch_with_retries(
    fetch: Callable[[], pd.DataFrame], ticker: str, retries: int, backoff: float, sleep: Callable[[float], None]
) -> pd.DataFrame:
    for attempt in range(retries + 1):
        try:
            return fetch()
        except _TRANSIENT as e:
            if attempt == retries:
                raise DownloadError(
                    f"{ticker}: download failed after {retries + 1} attempts ({type(e).__name__}: {e}). "
                    "Is the network up? Files already in the cache are intact; re-run to resume."
                ) from e
            wait = backoff * 2**attempt
            log.warning("%s: %s, retrying in %.1fs (%d/%d)", ticker, type(e).__name__, wait, attempt + 1, retries)
            sleep(wait)
    raise AssertionError("unreachable")


def download_tickers(
    tickers: Sequence[str],
    start: str,
    end: str,
    out_dir: str | Path,
    session: Any = None,
    retries: int = 3,
    backoff: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> DownloadReport:
    """Download ``tickers`` for ``start..end`` into the CSV cache ``out_dir``, resuming a previous run.

    :param session: a ``requests`` or ``curl_cffi`` session for yfinance (tests pass one that
        serves recorded responses); ``None`` lets yfinance create its own.
    :param retries: extra attempts per ticker after a network failure, waiting
        ``backoff * 2**k`` seconds before attempt ``k + 1``.
    :raises DownloadError: when a ticker still fails after its retries (the cache is intact).
    :raises DataValidationError: for tickers Yahoo has no data for, after the others are saved.
    """
    if pd.Timestamp(end) < pd.Timestamp(start):
        raise ValueError(f"end {end} is before start {start}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(out)
    report = DownloadReport()
    for ticker in tqdm(tickers, desc="download", unit="ticker", disable=None):
        if _covered(manifest.get(ticker), out, ticker, start, end):
            report.cached.append(ticker)
            continue
        try:
            history = _fetch_with_retries(
                lambda t=ticker: yahoo_history(t, start, end, session), ticker, retries, backoff, sleep
            )
        except _NO_DATA as e:
            log.error("%s: Yahoo has no data (%s)", ticker, e)
            report.unknown.append(ticker)
            continue
        bars = _to_bars(history, ticker).assign(volume=lambda b: b["volume"].round().astype("int64"))
        atomic_write_text(out / f"{ticker}.csv", bars.to_csv(index=False, date_format="%Y-%m-%d", float_format="%.6f"))
        manifest[ticker] = {
            "start": start,
            "end": end,
            "rows": str(len(bars)),
            "downloaded_at": pd.Timestamp.now("UTC").isoformat(),
        }
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
        report.downloaded.append(ticker)
    log.info("Downloaded %d, cached %d, unknown %d", len(report.downloaded), len(report.cached), len(report.unknown))
    if report.unknown:
        raise DataValidationError(
            f"Yahoo has no prices for {', '.join(report.unknown)} between {start} and {end} (unknown or delisted "
            f"ticker?). The other {len(report.downloaded) + len(report.cached)} tickers are saved in {out}."
        )
    return report
