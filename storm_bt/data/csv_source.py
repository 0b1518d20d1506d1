"""Per-ticker CSV files (plain or ``.csv.gz``) into a validated, calendar-aligned panel."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from storm_bt.data.schema import PANEL_COLUMNS, DataValidationError, check_instrument_name
from storm_bt.data.validate import GapPolicy, align_to_calendar, check_bars, parse_bars

__all__ = ["csv_files", "load_csv_dir", "read_bars_file"]

log = logging.getLogger(__name__)
_SUFFIXES = (".csv", ".csv.gz")


def _ticker_of(path: Path) -> str:
    name = path.name
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)].upper()
    raise ValueError(f"{path} is not a .csv or .csv.gz file")


def csv_files(csv_dir: str | Path) -> dict[str, Path]:
    """Map ticker -> file for every ``<TICKER>.csv`` or ``<TICKER>.csv.gz`` in ``csv_dir``."""
    folder = Path(csv_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"CSV folder {folder} does not exist or is not a folder.")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.name.lower().endswith(_SUFFIXES):
            continue
        if path.name.startswith((".", "_")):
            log.warning("%s: skipped %r (hidden or private file name, not a <TICKER>.csv)", folder, path.name)
            continue
        ticker = check_instrument_name(_ticker_of(path), f"{folder}: file {path.name!r}")
        if ticker in files:
            raise DataValidationError(
                f"{folder}: ticker {ticker} appears twice ({files[ticker].name} and {path.name})."
            )
        files[ticker] = path
    if not files:
        raise DataValidationError(f"{folder}: no <TICKER>.csv or <TICKER>.csv.gz files found.")
    return files


def read_bars_file(path: str | Path, min_history: int = 1, on_gap: GapPolicy = "raise") -> pd.DataFrame:
    """Read, validate and calendar-align one ticker's file; return bars indexed by session."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise DataValidationError(f"{path.name}: not a readable CSV file ({e}).") from e
    except (EOFError, zlib.error) as e:  # a truncated or damaged .csv.gz
        raise DataValidationError(f"{path.name}: a damaged gzip file ({e}); download it again.") from e
    bars = check_bars(parse_bars(raw, path.name), path.name, min_history=min_history)
    return align_to_calendar(bars, path.name, on_gap=on_gap).drop(columns="row")


def load_csv_dir(
    csv_dir: str | Path,
    tickers: Iterable[str] | None = None,
    min_history: int = 1,
    on_gap: GapPolicy = "raise",
) -> pd.DataFrame:
    """Load a folder of per-ticker files into one long panel with columns :data:`PANEL_COLUMNS`.

    :param tickers: restrict to these tickers; an unknown one is an error that lists what exists.
    :param min_history: fewest sessions a ticker needs (Alpha158 needs 60 for its longest window).
    :param on_gap: policy for sessions missing inside a ticker's history, see :func:`align_to_calendar`.
    """
    files = csv_files(csv_dir)
    if tickers is not None:
        wanted = [t.upper() for t in tickers]
        unknown = [t for t in wanted if t not in files]
        if unknown:
            raise DataValidationError(
                f"{csv_dir}: no file for ticker(s) {', '.join(unknown)}; available: {', '.join(sorted(files)[:20])}"
                + (" ..." if len(files) > 20 else "")
            )
        files = {t: files[t] for t in wanted}
    frames = []
    for ticker, path in tqdm(files.items(), desc="read csv", unit="file", leave=False, disable=None):
        bars = read_bars_file(path, min_history=min_history, on_gap=on_gap)
        frames.append(bars.reset_index().assign(instrument=ticker))
    panel = pd.concat(frames, ignore_index=True)[list(PANEL_COLUMNS)]
    log.info("Loaded %d tickers, %d bars from %s", len(files), len(panel), csv_dir)
    return panel
