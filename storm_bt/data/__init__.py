"""Market data: sources (Yahoo, CSV, synthetic) -> validation -> NYSE calendar -> Qlib provider."""

from storm_bt.data.calendar import nyse_sessions
from storm_bt.data.csv_source import load_csv_dir, read_bars_file
from storm_bt.data.provider import write_provider
from storm_bt.data.schema import PANEL_COLUMNS, DataQualityWarning, DataValidationError, DownloadError
from storm_bt.data.synthetic import SyntheticMarketConfig, make_market, write_market_csvs
from storm_bt.data.universes import parse_tickers, universe_tickers

__all__ = [
    "PANEL_COLUMNS",
    "DataQualityWarning",
    "DataValidationError",
    "DownloadError",
    "SyntheticMarketConfig",
    "load_csv_dir",
    "make_market",
    "nyse_sessions",
    "parse_tickers",
    "read_bars_file",
    "universe_tickers",
    "write_market_csvs",
    "write_provider",
]
