"""Alpha158US and PriceBarsUS: the chosen label, processors fit on train only, and no look-ahead in features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import qlib_features
from qlib.data.dataset.handler import DataHandlerLP
from storm_bt.handlers import Alpha158US, PriceBarsUS, label_horizon

from storm_bt.data.csv_source import load_csv_dir
from storm_bt.data.provider import write_provider


@pytest.fixture(scope="module")
def panel(small_market) -> pd.DataFrame:
    return load_csv_dir(small_market[1])


@pytest.fixture(scope="module")
def provider(panel, tmp_path_factory):
    path = tmp_path_factory.mktemp("handler") / "qlib"
    write_provider(panel, path, "synth")
    return path


def _handler(provider, panel, fit_end: pd.Timestamp, kind: type[Alpha158US] = Alpha158US, **kwargs) -> Alpha158US:
    qlib_features(provider, ["SYN000"], ["$close"])  # (re)initialise Qlib on this provider
    first, last = panel["date"].min(), panel["date"].max()
    return kind(
        instruments="synth", start_time=first, end_time=last, fit_start_time=first, fit_end_time=fit_end, **kwargs
    )


@pytest.mark.parametrize(("label", "shift"), [("qlib", 1), ("storm", 0)])
def test_label_choice(provider, panel, label, shift):
    handler = _handler(provider, panel, panel["date"].iloc[150], label=label, learn_processors=[])
    got = handler.fetch(col_set="label", data_key=DataHandlerLP.DK_R)["LABEL0"]
    adj = panel.pivot(index="date", columns="instrument", values="adj_close")
    expected = (adj.shift(-1 - shift) / adj.shift(-shift) - 1).stack().rename_axis(["datetime", "instrument"])
    expected = expected.reindex(got.index)
    mask = expected.notna()
    assert mask.sum() > 3000
    np.testing.assert_allclose(got[mask], expected[mask], rtol=1e-5, atol=5e-7)  # float32 prices
    assert label_horizon(label) == 1 + shift


def test_unknown_label_and_missing_fit_range():
    with pytest.raises(ValueError, match=r"Unknown label 'tomorrow'; expected one of \['qlib', 'storm'\]"):
        Alpha158US(label="tomorrow")
    with pytest.raises(ValueError, match=r"fit_start_time/fit_end_time are not set"):
        Alpha158US(instruments="synth")


def test_processors_fit_on_the_train_range_only(provider, panel):
    """Changing data after fit_end moves neither the learned statistics nor the normalised past."""
    fit_end = panel["date"].iloc[150]
    handler = _handler(provider, panel, fit_end)
    norm = next(p for p in handler.infer_processors if type(p).__name__ == "RobustZScoreNorm")
    raw = handler.fetch(col_set="feature", data_key=DataHandlerLP.DK_R)
    train = raw.loc[raw.index.get_level_values("datetime") <= fit_end]
    np.testing.assert_allclose(norm.mean_train, np.nanmedian(train.to_numpy(), axis=0), rtol=1e-6)


def test_price_bars_are_each_session_against_the_previous_adjusted_close(provider, panel):
    handler = _handler(provider, panel, panel["date"].iloc[150], PriceBarsUS)
    got = handler.fetch(col_set="feature", data_key=DataHandlerLP.DK_R)
    assert list(got.columns) == ["RET", "OPEN", "HIGH", "LOW", "VWAP", "VOLUME"]
    wide = {f: panel.pivot(index="date", columns="instrument", values=f) for f in ("open", "high", "low", "close")}
    factor = panel.pivot(index="date", columns="instrument", values="adj_close") / wide["close"]
    adjusted = {f: wide[f] * factor for f in wide}
    previous = adjusted["close"].shift(1)
    adjusted["vwap"] = (adjusted["high"] + adjusted["low"] + adjusted["close"]) / 3
    for name, field in [("RET", "close"), ("OPEN", "open"), ("HIGH", "high"), ("LOW", "low"), ("VWAP", "vwap")]:
        expected = (adjusted[field] / previous - 1).stack().rename_axis(["datetime", "instrument"]).reindex(got.index)
        mask = expected.notna()
        assert mask.sum() > 3000, name
        np.testing.assert_allclose(got.loc[mask, name], expected[mask], rtol=1e-4, atol=1e-6, err_msg=name)
    volume = panel.pivot(index="date", columns="instrument", values="volume") / factor
    relative = (volume / volume.rolling(20, min_periods=1).mean() - 1).stack().rename_axis(["datetime", "instrument"])
    np.testing.assert_allclose(got["VOLUME"], relative.reindex(got.index), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", [Alpha158US, PriceBarsUS])
def test_no_look_ahead_in_features(panel, tmp_path, kind):
    """Perturbing every price and volume after date t changes no feature at or before t."""
    dates = np.sort(panel["date"].unique())
    t, fit_end = pd.Timestamp(dates[200]), pd.Timestamp(dates[150])
    future = panel["date"] > t
    rng = np.random.default_rng(0)
    shaken = panel.copy()
    factor = rng.uniform(0.8, 1.25, future.sum())
    for field in ("open", "high", "low", "close", "adj_close"):
        shaken.loc[future, field] *= factor
    shaken.loc[future, "volume"] = np.round(shaken.loc[future, "volume"] * rng.uniform(0.5, 2.0, future.sum()))
    write_provider(panel, tmp_path / "orig", "synth")
    write_provider(shaken, tmp_path / "shaken", "synth")

    frames = {}
    for name in ("orig", "shaken"):
        handler = _handler(tmp_path / name, panel, fit_end, kind)
        frames[name] = {
            key: handler.fetch(col_set="feature", data_key=key) for key in (DataHandlerLP.DK_R, DataHandlerLP.DK_I)
        }
    for key in (DataHandlerLP.DK_R, DataHandlerLP.DK_I):
        a, b = frames["orig"][key], frames["shaken"][key]
        past = a.index.get_level_values("datetime") <= t
        assert past.sum() > 2000
        np.testing.assert_array_equal(a[past].to_numpy(), b[past].to_numpy())
        after = ~past
        assert np.nanmean(np.abs(a[after].to_numpy() - b[after].to_numpy())) > 1e-3  # the change is visible after t
