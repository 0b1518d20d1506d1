"""Yahoo downloads from recorded wire responses: cache, resume, retries, network failure, unknown tickers.

The responses are Yahoo chart-API JSON built from the synthetic market and served to the real
yfinance client through a ``requests`` session (no network).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import requests
import responses
import yfinance as yf
from yfinance.data import YfData

from storm_bt.data.csv_source import read_bars_file
from storm_bt.data.schema import DataValidationError, DownloadError
from storm_bt.data.testing import yahoo_chart_json, yahoo_not_found_json
from storm_bt.data.yahoo import MANIFEST, download_tickers

CHART = re.compile(r"https://query\d\.finance\.yahoo\.com/v8/finance/chart/([A-Z]+)")


class FakeYahoo:
    """Serves recorded chart responses; ``down`` tickers raise a connection error."""

    def __init__(self, market_panel: pd.DataFrame) -> None:
        self.panel = market_panel
        self.down: set[str] = set()
        self.calls: list[str] = []

    def __call__(self, request: requests.PreparedRequest):
        url = request.url or ""
        if "fc.yahoo.com" in url:
            return 200, {"Set-Cookie": "A3=d=x; Domain=.yahoo.com; Path=/; Expires=Wed, 01 Jan 2031 00:00:00 GMT"}, ""
        if "getcrumb" in url:
            return 200, {}, "crumb"
        match = CHART.match(url)
        if not match:
            return 404, {}, ""
        symbol = match.group(1)
        self.calls.append(symbol)
        if symbol in self.down:
            raise requests.ConnectionError(f"Failed to establish a new connection to {url}")
        bars = self.panel[self.panel["instrument"] == symbol]
        query = dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&"))
        if "period1" in query:  # Yahoo answers the range it is asked for
            ny = pd.to_datetime(bars["date"]).dt.tz_localize("America/New_York")
            stamps = (ny + pd.Timedelta(hours=9, minutes=30)).map(pd.Timestamp.timestamp)
            bars = bars[(stamps >= int(query["period1"])).to_numpy() & (stamps < int(query["period2"])).to_numpy()]
        if bars.empty:
            return 404, {"Content-Type": "application/json"}, yahoo_not_found_json()
        return 200, {"Content-Type": "application/json"}, yahoo_chart_json(bars, symbol)


@pytest.fixture
def yahoo(small_market, tmp_path_factory):
    yf.set_tz_cache_location(str(tmp_path_factory.mktemp("yf_cache")))
    YfData.cache_get.cache_clear()  # yfinance memoises past ranges in-process; each test starts cold
    market, _ = small_market
    panel = market.panel.copy()
    panel["instrument"] = panel["instrument"].str.replace("SYN", "T")
    panel["instrument"] = panel["instrument"].map(lambda s: "".join(chr(65 + int(c)) for c in s[1:]))  # AAA, AAB...
    fake = FakeYahoo(panel)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.GET, re.compile(r"https://.*"), callback=fake)
        yield fake, requests.Session()


START, END = "2015-01-02", "2015-06-30"


def test_download_writes_validated_csv_and_manifest(yahoo, small_market, tmp_path):
    fake, session = yahoo
    report = download_tickers(["AAA", "AAB"], START, END, tmp_path, session=session, sleep=lambda s: None)
    assert report.downloaded == ["AAA", "AAB"] and report.cached == []
    bars = read_bars_file(tmp_path / "AAA.csv")
    expected = fake.panel[(fake.panel["instrument"] == "AAA") & (fake.panel["date"] <= END)]
    assert bars.index[0] == pd.Timestamp(START) and bars.index[-1] == pd.Timestamp(END)
    np.testing.assert_allclose(bars["adj_close"], expected["adj_close"], rtol=1e-6)
    np.testing.assert_array_equal(bars["volume"], expected["volume"])
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["AAB"]["start"] == START and manifest["AAB"]["end"] == END


def test_second_run_uses_the_cache(yahoo, tmp_path):
    fake, session = yahoo
    download_tickers(["AAA", "AAB"], START, END, tmp_path, session=session)
    fake.calls.clear()
    report = download_tickers(["AAA", "AAB"], START, "2015-03-31", tmp_path, session=session)
    assert report.cached == ["AAA", "AAB"] and fake.calls == []
    report = download_tickers(["AAA"], START, "2015-09-30", tmp_path, session=session)  # wider range: fetch again
    assert report.downloaded == ["AAA"] and "AAA" in fake.calls


def test_network_failure_retries_then_keeps_the_cache_and_resumes(yahoo, tmp_path):
    fake, session = yahoo
    download_tickers(["AAA"], START, END, tmp_path, session=session)
    cached = (tmp_path / "AAA.csv").read_bytes()
    manifest = (tmp_path / MANIFEST).read_bytes()

    fake.down = {"AAA", "AAB"}
    waits: list[float] = []
    with pytest.raises(
        DownloadError, match=r"AAA: download failed after 4 attempts \(ConnectionError.*Is the network up\?"
    ):
        download_tickers(
            ["AAA", "AAB"], START, "2015-09-30", tmp_path, session=session, retries=3, backoff=0.5, sleep=waits.append
        )
    assert waits == [0.5, 1.0, 2.0]
    assert (tmp_path / "AAA.csv").read_bytes() == cached and (tmp_path / MANIFEST).read_bytes() == manifest
    assert not (tmp_path / "AAB.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["AAA.csv", MANIFEST]  # no temporary file left

    fake.down = {"AAB"}  # the first ticker comes back, the second stays down: the run stops at the second
    with pytest.raises(DownloadError, match="AAB"):
        download_tickers(["AAA", "AAB", "AAC"], START, END, tmp_path, session=session, retries=1, sleep=lambda s: None)
    fake.down = set()
    fake.calls.clear()
    report = download_tickers(["AAA", "AAB", "AAC"], START, END, tmp_path, session=session)
    assert report.cached == ["AAA"] and report.downloaded == ["AAB", "AAC"]  # resumed where it stopped
    assert "AAA" not in fake.calls


def test_transient_failure_recovers(yahoo, tmp_path):
    fake, session = yahoo
    attempts = {"n": 0}

    def flaky_sleep(seconds: float) -> None:
        attempts["n"] += 1
        fake.down = set()  # the network comes back while we wait

    fake.down = {"AAA"}
    report = download_tickers(["AAA"], START, END, tmp_path, session=session, sleep=flaky_sleep)
    assert report.downloaded == ["AAA"] and attempts["n"] == 1


def test_unknown_ticker_is_reported_and_others_are_saved(yahoo, tmp_path):
    _, session = yahoo
    with pytest.raises(DataValidationError, match=r"Yahoo has no prices for ZZZZ between 2015-01-02 and 2015-06-30"):
        download_tickers(["AAA", "ZZZZ"], START, END, tmp_path, session=session)
    assert (tmp_path / "AAA.csv").exists() and not (tmp_path / "ZZZZ.csv").exists()


def test_bad_range_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="before start"):
        download_tickers(["AAA"], "2020-01-10", "2020-01-01", tmp_path)
