from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers import quickstart

from storm_bt.data.synthetic import SyntheticMarket, SyntheticMarketConfig, write_market_csvs
from storm_bt.data.testing import shared_data_dir

SMALL_MARKET = SyntheticMarketConfig(n_stocks=12, n_days=300, seed=7)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not available")
    return path


@pytest.fixture(scope="session")
def small_market(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticMarket, Path]:
    """A 12-stock, 300-session synthetic market written as CSV files."""
    out = tmp_path_factory.mktemp("small_market")
    return write_market_csvs(SMALL_MARKET, out), out


@pytest.fixture
def bars() -> pd.DataFrame:
    """Eight clean bars of one ticker, starting on 2020-01-02."""
    dates = pd.to_datetime(
        ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07", "2020-01-08", "2020-01-09", "2020-01-10", "2020-01-13"]
    )
    close = pd.Series([10.0, 10.5, 10.2, 10.8, 11.0, 10.9, 11.3, 11.1])
    return pd.DataFrame(
        {
            "date": dates,
            "open": close - 0.1,
            "high": close + 0.3,
            "low": close - 0.4,
            "close": close,
            "adj_close": close * 0.9,
            "volume": [1000, 1100, 900, 1200, 1000, 950, 1300, 1250],
        }
    )


@pytest.fixture(scope="session")
def quickstart_first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The quickstart on its 30-stock synthetic market, run once per test session: (run folder, its log)."""
    run_dir = tmp_path_factory.mktemp("quickstart")
    return run_dir, quickstart(run_dir).stderr


@pytest.fixture(scope="session")
def quickstart_run(quickstart_first: tuple[Path, str]) -> Path:
    return quickstart_first[0]
