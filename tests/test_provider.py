"""The Qlib provider reads back exactly what was ingested, and grows without rewriting history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import folder_digest, qlib_features

from storm_bt.data.csv_source import load_csv_dir
from storm_bt.data.provider import FIELDS, read_bin, write_provider
from storm_bt.data.schema import DataValidationError


def _expected(panel: pd.DataFrame) -> pd.DataFrame:
    """Provider fields computed independently from the raw bars, as float32."""
    p = panel.sort_values(["instrument", "date"]).copy()
    factor = p["adj_close"] / p["close"]
    out = pd.DataFrame(
        {
            "$open": p["open"] * factor,
            "$high": p["high"] * factor,
            "$low": p["low"] * factor,
            "$close": p["adj_close"],
            "$volume": p["volume"] / factor,
            "$factor": factor,
        }
    )
    out["$vwap"] = (out["$high"] + out["$low"] + out["$close"]) / 3
    out.index = pd.MultiIndex.from_arrays([p["instrument"], p["date"]], names=["instrument", "datetime"])
    return out.astype(np.float32)


def _assert_reads_back_exactly(provider: Path, panel: pd.DataFrame) -> None:
    expected = _expected(panel)
    instruments = sorted(panel["instrument"].unique())
    got = qlib_features(provider, instruments, list(expected.columns)).astype(np.float32)
    got = got.reindex(expected.index)
    for col in expected.columns:
        np.testing.assert_array_equal(got[col].to_numpy(), expected[col].to_numpy(), err_msg=col)


def test_synthetic_round_trip_through_qlib(small_market, tmp_path):
    _market, folder = small_market
    panel = load_csv_dir(folder)
    summary = write_provider(panel, tmp_path / "qlib", "synth")
    assert summary.mode == "fresh" and summary.instruments == 12 and summary.benchmark == "SYNTH_EW"
    _assert_reads_back_exactly(tmp_path / "qlib", panel)
    listed = (tmp_path / "qlib" / "instruments" / "synth.txt").read_text().splitlines()
    last = panel["date"].max()
    assert listed[0] == f"SYN000\t2015-01-02\t{last:%Y-%m-%d}" and len(listed) == 12
    assert (tmp_path / "qlib" / "instruments" / "all.txt").read_text().splitlines() == listed


def test_change_and_benchmark(small_market, tmp_path):
    _, folder = small_market
    panel = load_csv_dir(folder)
    write_provider(panel, tmp_path / "qlib", "synth")
    adj = panel.pivot(index="date", columns="instrument", values="adj_close")
    got = qlib_features(tmp_path / "qlib", ["SYN003", "SYNTH_EW"], ["$change", "$close"])
    np.testing.assert_allclose(got.loc["SYN003", "$change"].iloc[1:], adj["SYN003"].pct_change().iloc[1:], rtol=2e-5)
    ew = 100 * (1 + adj.pct_change().mean(axis=1).fillna(0)).cumprod()
    np.testing.assert_allclose(got.loc["SYNTH_EW", "$close"], ew, rtol=1e-6)


def _split(panel: pd.DataFrame, cut: str, overlap: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    dates = np.sort(panel["date"].unique())
    cut_ts = pd.Timestamp(cut)
    start_new = dates[np.searchsorted(dates, cut_ts) - overlap]
    return panel[panel["date"] <= cut_ts], panel[panel["date"] >= start_new]


def test_incremental_update_appends_without_rewriting_history(small_market, tmp_path):
    _, folder = small_market
    panel = load_csv_dir(folder)
    old, new = _split(panel, "2015-10-30")
    write_provider(old, tmp_path / "inc", "synth")
    before = {p: (tmp_path / "inc" / p).read_bytes() for p in folder_digest(tmp_path / "inc") if p.endswith(".bin")}
    summary = write_provider(new, tmp_path / "inc", "synth")
    assert summary.mode == "update" and summary.appended_sessions > 50
    for rel, old_bytes in before.items():
        assert (tmp_path / "inc" / rel).read_bytes()[: len(old_bytes)] == old_bytes, rel
    write_provider(panel, tmp_path / "full", "synth")
    for inst in ("SYN000", "SYN011", "SYNTH_EW"):
        for field in FIELDS:
            start_a, a = read_bin(tmp_path / "inc", inst, field)
            start_b, b = read_bin(tmp_path / "full", inst, field)
            assert start_a == start_b
            np.testing.assert_allclose(a, b, rtol=2e-6, err_msg=f"{inst} {field}")
    _assert_reads_back_exactly(tmp_path / "inc", panel)


def test_update_rescales_a_new_adjustment_basis(small_market, tmp_path):
    """A later dividend rescales Yahoo's whole adj_close history; appended prices continue the store."""
    _, folder = small_market
    panel = load_csv_dir(folder)
    old, new = _split(panel, "2015-10-30")
    new = new.assign(adj_close=new["adj_close"] * 0.97)
    write_provider(old, tmp_path / "q", "synth")
    write_provider(new, tmp_path / "q", "synth")
    write_provider(panel, tmp_path / "full", "synth")
    for field in ("close", "open", "volume", "change"):
        np.testing.assert_allclose(
            read_bin(tmp_path / "q", "SYN005", field)[1],
            read_bin(tmp_path / "full", "SYN005", field)[1],
            rtol=2e-6,
            err_msg=field,
        )


def test_failed_update_leaves_provider_intact(small_market, tmp_path):
    _, folder = small_market
    panel = load_csv_dir(folder)
    old, new = _split(panel, "2015-10-30")
    write_provider(old, tmp_path / "q", "synth")
    before = folder_digest(tmp_path / "q")
    day = pd.Timestamp("2015-10-28")
    bad = new.copy()
    bad.loc[(bad["instrument"] == "SYN004") & (bad["date"] == day), ["close", "adj_close"]] *= 1.1
    with pytest.raises(DataValidationError, match=r"SYN004: adjusted returns on 2015-10-28 differ"):
        write_provider(bad, tmp_path / "q", "synth")
    no_overlap = panel[panel["date"] > pd.Timestamp("2015-10-30")]
    with pytest.raises(DataValidationError, match=r"must include the last stored session 2015-10-30"):
        write_provider(no_overlap, tmp_path / "q", "synth")
    assert folder_digest(tmp_path / "q") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".q.lock", "q"]  # no staging folder left behind


def test_update_cannot_prepend_history(small_market, tmp_path):
    _, folder = small_market
    panel = load_csv_dir(folder)
    write_provider(panel[panel["date"] >= pd.Timestamp("2015-06-01")], tmp_path / "q", "synth")
    with pytest.raises(DataValidationError, match=r"before the provider's first session 2015-06-01"):
        write_provider(panel, tmp_path / "q", "synth")


def test_dj30_round_trip(shared_data, tmp_path):
    panel = load_csv_dir(shared_data / "dj30", min_history=60)
    summary = write_provider(panel, tmp_path / "dj30", "dj30")
    assert summary.instruments == 29
    assert (summary.first_session, summary.last_session) == (pd.Timestamp("2008-04-01"), pd.Timestamp("2021-03-31"))
    _assert_reads_back_exactly(tmp_path / "dj30", panel)
    aapl = qlib_features(tmp_path / "dj30", ["AAPL"], ["$close/$factor"], "2008-04-01", "2008-04-01")
    assert aapl.iloc[0, 0] == pytest.approx(5.340357, rel=1e-6)  # the raw close of the CSV
