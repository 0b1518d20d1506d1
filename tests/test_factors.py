"""Factor store: round trip, lazy date-range reads, atomic writes, no look-ahead, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import qlib
import torch
from helpers import CFG, WINDOW, planted_frame
from qlib.utils import init_instance_by_config

from storm_bt.factors.store import FactorStore, FactorStoreError, write_factor_store
from storm_bt.io import LockedError, exclusive
from storm_bt.model.storm import Storm
from storm_bt.model.windows import Panel, WindowDataset
from storm_bt.workflows.prepared import dataset_config_in, prepare_handler, with_prepared_handler
from storm_bt.workflows.qrun import load_workflow
from storm_bt.workflows.segments import Segments


@pytest.fixture(scope="module")
def model() -> Storm:
    torch.manual_seed(0)
    return Storm(CFG).eval()


@pytest.fixture(scope="module")
def panel() -> Panel:
    features, labels = planted_frame()
    absent = (features.index.get_level_values("datetime")[40 * 10], "S02")  # S02 missing on day 40
    return Panel.from_frame(features.drop(index=absent), labels)


def _all_windows(panel: Panel) -> WindowDataset:
    return WindowDataset(panel, WINDOW, np.arange(len(panel.dates)))


def test_round_trip_matches_the_model_and_reads_by_date(model, panel, tmp_path):
    path = write_factor_store(model, _all_windows(panel), tmp_path / "f.h5", {"seed": 3, "cfg": {"a": 1}}, 16, 32)
    with FactorStore(path) as store:
        assert list(store.dates) == list(panel.dates) and store.instruments == list(panel.instruments)
        assert store.attrs["seed"] == 3 and json.loads(store.attrs["cfg"]) == {"a": 1}
        day = 57
        x, mask, _, _ = _all_windows(panel)[day]
        with torch.no_grad():
            emb = model(x[None], mask[None]).embeddings
        got = {k: store.read(k, panel.dates[day], panel.dates[day])[0] for k in store.names()}
        np.testing.assert_allclose(got["pooled"], emb.stock[0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["ts_tokens"], emb.ts_tokens[0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got["cs_codes"], emb.cs_codes[0].numpy())
        assert store.read("pooled", panel.dates[10], panel.dates[19]).shape[0] == 10
        assert store.read("pooled", "1990-01-01", "1990-12-31").shape[0] == 0
        tokens = store.tokens("S03", panel.dates[day], panel.dates[day]).iloc[0].to_numpy()
        expected = np.concatenate([emb.ts_tokens[0, :, 3].numpy().ravel(), emb.cs_tokens[0].numpy().ravel()])
        np.testing.assert_allclose(tokens, expected, rtol=1e-5, atol=1e-6)
        assert store.tokens("S02").iloc[40].isna().all()
        pooled = store.pooled("S02")
        assert pooled.iloc[40].isna().all() and pooled.drop(index=panel.dates[40]).notna().all().all()
        with pytest.raises(FactorStoreError, match="unknown instrument 'ZZZ'"):
            store.pooled("ZZZ")
        with pytest.raises(FactorStoreError, match="no embedding 'weights'"):
            store.read("weights")


def test_interrupted_export_leaves_the_previous_store_intact(model, panel, tmp_path, monkeypatch):
    path = write_factor_store(model, _all_windows(panel), tmp_path / "f.h5", {}, 16)
    before = path.read_bytes()
    calls = {"n": 0}
    forward = Storm.forward

    def fail_on_third_batch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(Storm, "forward", fail_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        write_factor_store(model, _all_windows(panel), path, {"new": 1}, 16)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == ["f.h5"]  # no temporary file left behind


def test_a_store_being_written_refuses_a_second_writer(model, panel, tmp_path):
    path = write_factor_store(model, _all_windows(panel), tmp_path / "f.h5", {}, 16)
    before = path.read_bytes()
    with exclusive(path, "factor store"), pytest.raises(LockedError, match=r"factor store .*f\.h5"):
        write_factor_store(model, _all_windows(panel), path, {"new": 1}, 16)
    assert path.read_bytes() == before


def test_rows_up_to_t_do_not_change_when_later_data_changes(model, panel, tmp_path):
    t = 120
    shaken = Panel(
        panel.dates,
        panel.instruments,
        np.where(np.arange(len(panel.dates))[:, None, None] > t, -panel.features * 3, panel.features),
        panel.present,
        panel.labels,
    )
    a = write_factor_store(model, _all_windows(panel), tmp_path / "a.h5", {}, 16)
    b = write_factor_store(model, _all_windows(shaken), tmp_path / "b.h5", {}, 16)
    with FactorStore(a) as sa, FactorStore(b) as sb:
        for name in sa.names():
            np.testing.assert_array_equal(sa.read(name, None, panel.dates[t]), sb.read(name, None, panel.dates[t]))
        assert not np.array_equal(sa.read("pooled", panel.dates[t + 1]), sb.read("pooled", panel.dates[t + 1]))


def test_unreadable_store_is_named(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(FactorStoreError, match=r"bad\.h5"):
        FactorStore(bad)


def test_factor_export_from_the_quickstart_run(quickstart_run, tmp_path):
    out = tmp_path / "factors.h5"
    cmd = [sys.executable, "-m", "storm_bt.cli", "factors", "export", "--run", str(quickstart_run), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    with FactorStore(out) as store:
        config = load_workflow(quickstart_run / "workflow.yaml")
        handler = config["task"]["dataset"]["kwargs"]["handler"]["kwargs"]
        assert store.dates[0] == pd.Timestamp(handler["start_time"]) and store.dates[-1] == pd.Timestamp(
            handler["end_time"]
        )
        assert len(store.instruments) == 30 and store.attrs["preset"] == "small"
        assert json.loads(store.attrs["segments"]) == config["task"]["dataset"]["kwargs"]["segments"]
        assert store.segments == Segments.from_config(config["task"]["dataset"]["kwargs"]["segments"])
        assert np.isfinite(store.read("pooled")).all()


def test_factor_export_names_a_folder_without_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "storm_bt.cli", "factors", "export", "--run", str(tmp_path), "--out", "x.h5"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "mlruns.db" in done.stderr


def test_factor_export_from_a_run_that_reads_a_prepared_handler(quickstart_run, tmp_path):
    """A walk-forward run's workflow names its handler as a pickle relative to the run folder."""
    config = load_workflow(quickstart_run / "workflow.yaml")
    qlib.init(**{k: v for k, v in config["qlib_init"].items() if k != "exp_manager"})
    prepared = Path(prepare_handler(config, str(tmp_path / "prepared" / "handler.pkl")))
    run_dir = tmp_path / "runs" / "fold00"
    in_run = with_prepared_handler(config, prepared, run_dir)
    assert in_run["task"]["dataset"]["kwargs"]["handler"] == "file://../../prepared/handler.pkl"
    dataset = init_instance_by_config(dataset_config_in(in_run, run_dir))  # from the test's own working folder
    handler = config["task"]["dataset"]["kwargs"]["handler"]["kwargs"]
    assert pd.Timestamp(dataset.handler.start_time) == pd.Timestamp(handler["start_time"])
    assert pd.Timestamp(dataset.handler.end_time) == pd.Timestamp(handler["end_time"])
    assert dataset_config_in(config, run_dir) == config["task"]["dataset"]  # a handler config is left as it is
