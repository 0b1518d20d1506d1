"""Workflow YAMLs load, are consistent, and run end to end through ``qrun`` on the synthetic market."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from storm_bt.handlers import label_horizon
from storm_bt.handlers.alpha158_us import DEFAULT_INFER_PROCESSORS

from storm_bt.data.calendar import nyse_sessions
from storm_bt.model.config import ABLATIONS
from storm_bt.workflows.qrun import load_workflow, retarget, workflow_segments
from storm_bt.workflows.segments import Segments

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "experiments").glob("workflow_*.yaml"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_us_and_leak_free(path):
    config = load_workflow(path)
    init = config["qlib_init"]
    assert init["region"] == "us"
    assert init["exp_manager"]["kwargs"]["uri"].startswith("sqlite:")  # plain qrun works with mlflow 3
    handler = config["task"]["dataset"]["kwargs"]["handler"]["kwargs"]
    segments = workflow_segments(config)
    calendar = nyse_sessions(handler["start_time"], handler["end_time"])
    segments.check(calendar, embargo=label_horizon(handler.get("label", "qlib")))
    assert pd.Timestamp(handler["fit_start_time"]) == segments.train[0]
    assert pd.Timestamp(handler["fit_end_time"]) == segments.train[1]
    for record in config["task"]["record"]:
        if record["class"] == "PortAnaRecord":
            backtest = record["kwargs"]["config"]["backtest"]
            exchange = backtest["exchange_kwargs"]
            assert backtest["benchmark"] != "SH000300" and exchange["limit_threshold"] is None
            assert exchange["open_cost"] == exchange["close_cost"] == 0.0005
            assert pd.Timestamp(backtest["start_time"]) >= segments.test[0]
            assert pd.Timestamp(backtest["end_time"]) < segments.test[1]


def test_retarget_changes_only_provider_market_benchmark_and_dates():
    config = load_workflow(ROOT / "experiments" / "workflow_lgbm_alpha158_dj30.yaml")
    segments = Segments.carve(nyse_sessions("2015-01-02", "2017-12-29"), (0.6, 0.2, 0.2), embargo=2)
    out = retarget(config, "/data/synth", "synth", "SYNTH_EW", segments)
    assert out["qlib_init"]["provider_uri"] == "/data/synth"
    assert workflow_segments(out) == segments
    handler = out["task"]["dataset"]["kwargs"]["handler"]["kwargs"]
    assert handler["instruments"] == "synth" and handler["fit_end_time"] == f"{segments.train[1]:%Y-%m-%d}"
    assert out["task"]["model"] == config["task"]["model"]
    assert handler["label"] == config["task"]["dataset"]["kwargs"]["handler"]["kwargs"]["label"]
    backtest = out["task"]["record"][2]["kwargs"]["config"]["backtest"]
    assert (
        backtest["benchmark"] == "SYNTH_EW"
        and backtest["exchange_kwargs"] == config["port_analysis_config"]["backtest"]["exchange_kwargs"]
    )
    assert config["qlib_init"]["provider_uri"] == "~/.storm_bt/qlib_data/dj30"  # the original is untouched


@pytest.mark.slow
def test_lgbm_workflow_on_dj30(shared_data, tmp_path):
    """The shipped workflow on real DJ30 prices, changing only the provider path (dates are the file's)."""
    from storm_bt.data.csv_source import load_csv_dir
    from storm_bt.data.provider import write_provider
    from storm_bt.workflows.qrun import latest_metrics, run_qrun, write_workflow

    write_provider(load_csv_dir(shared_data / "dj30", min_history=60), tmp_path / "qlib", "dj30")
    config = load_workflow(ROOT / "experiments" / "workflow_lgbm_alpha158_dj30.yaml")
    config["qlib_init"]["provider_uri"] = str(tmp_path / "qlib")
    path = write_workflow(config, tmp_path / "workflow.yaml")
    run_qrun(path, cwd=tmp_path, log_path=tmp_path / "qrun.log")
    metrics = latest_metrics(tmp_path)
    assert -0.05 < metrics["Rank IC"] < 0.1  # US large caps: RankIC is small (FactorVQVAE reports ~0.01 on S&P500)
    assert np.isfinite(metrics["1day.excess_return_with_cost.annualized_return"])
    log = (tmp_path / "qrun.log").read_text()
    assert "Rank IC" in log and "excess return with cost" in log


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_records_signal_ic_portfolio_and_paper_metrics(path):
    config = load_workflow(path)
    assert [r["class"] for r in config["task"]["record"]] == [
        "SignalRecord",
        "SigAnaRecord",
        "PortAnaRecord",
        "PaperMetricsRecord",
    ]
    strategy = config["task"]["record"][2]["kwargs"]["config"]["strategy"]
    assert strategy["class"] == "WeeklyTopkDropoutStrategy"
    assert {"topk", "n_drop", "rebalance"} <= set(strategy["kwargs"])


@pytest.mark.parametrize("universe", ["dj30", "sp500"])
def test_workflows_of_a_universe_share_one_protocol(universe):
    protocol = load_workflow(ROOT / "experiments" / f"protocol_{universe}.yaml")
    assert "model" not in protocol["task"]
    assert protocol["task"]["dataset"]["kwargs"]["handler"]["kwargs"]["instruments"] == universe
    workflows = list((ROOT / "experiments").glob(f"workflow_*_{universe}*.yaml"))
    assert len(workflows) >= 2
    for path in workflows:
        config = load_workflow(path)
        assert config["task"]["record"] == protocol["task"]["record"], path.name
        handler = config["task"]["dataset"]["kwargs"]["handler"]
        if path.stem.endswith("_shuffled"):  # the placebo differs by its label shuffle alone
            learn = handler["kwargs"].pop("learn_processors")
            assert [p["class"] for p in learn] == ["DropnaLabel", "ShuffleLabel", "CSZScoreNorm"]
        if "_bars_" in path.stem:  # the price-bars input differs by its handler class alone
            klass = (handler.pop("class"), handler.pop("module_path"))
            assert klass == ("PriceBarsUS", "storm_bt.handlers.price_bars_us"), path.name
            handler = {**protocol["task"]["dataset"]["kwargs"]["handler"], **handler}
        if "_alpha20_" in path.stem:  # 20 of Alpha158's columns, kept before the default normalisation
            first, *infer = handler["kwargs"].pop("infer_processors")
            assert first["class"] == "FilterCol" and len(set(first["kwargs"]["col_list"])) == 20, path.name
            assert infer == [dict(p) for p in DEFAULT_INFER_PROCESSORS], path.name
        if "_pooled_" in path.stem:  # trained on the pooled universe of another provider, otherwise the same
            assert handler["kwargs"].pop("instruments") == f"{universe}_pooled", path.name
            assert config["qlib_init"]["provider_uri"] == "~/.storm_bt/qlib_data/us", path.name
            handler = {**handler, "kwargs": {**handler["kwargs"], "instruments": universe}}
        assert handler == protocol["task"]["dataset"]["kwargs"]["handler"], path.name
        assert workflow_segments(config) == workflow_segments(protocol), path.name


def test_ablation_workflows_change_only_the_ablation_and_run_folder():
    base = load_workflow(ROOT / "experiments" / "workflow_storm_small_dj30.yaml")
    ablations = sorted((ROOT / "experiments").glob("workflow_storm_small_dj30_*.yaml"))
    assert {p.stem.removeprefix("workflow_storm_small_dj30_") for p in ablations} == set(ABLATIONS)
    for path in ablations:
        config = load_workflow(path)
        kwargs = config["task"]["model"]["kwargs"]
        assert kwargs.pop("ablation") == path.stem.removeprefix("workflow_storm_small_dj30_")
        assert kwargs.pop("run_dir") != base["task"]["model"]["kwargs"]["run_dir"]
        expected = {k: v for k, v in base["task"]["model"]["kwargs"].items() if k != "run_dir"}
        assert kwargs == expected and {k: v for k, v in config.items() if k != "task"} == {
            k: v for k, v in base.items() if k != "task"
        }


def test_missing_base_config_is_named(tmp_path):
    path = tmp_path / "workflow.yaml"
    path.write_text("BASE_CONFIG_PATH: nowhere.yaml\n")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.yaml"):
        load_workflow(path)
