"""The quickstart end to end on the synthetic market: stages, progress, reuse, damage, a learnable signal."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import qlib
from helpers import check_report, folder_digest, quickstart
from qlib.data.dataset.handler import DataHandlerLP
from qlib.utils import init_instance_by_config

from storm_bt.factors.store import FactorStore
from storm_bt.metrics import rank_ic_summary
from storm_bt.workflows.qrun import load_workflow
from storm_bt.workflows.segments import Segments

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_shows_every_stage_and_training_progress(quickstart_first):
    _, log = quickstart_first
    for stage in range(1, 8):
        assert f"[{stage}/7] " in log
    epochs = re.findall(r"epoch (\d+): loss [\d.]+  valid RankIC", log)
    assert epochs and epochs == [str(e) for e in range(1, len(epochs) + 1)]  # one line per finished epoch


def test_quickstart_trades_one_stock_in_the_env_and_in_backtrader(quickstart_run):
    """Factors exported, PPO trained and selected, replayed on test in both engines, report written."""
    with FactorStore(quickstart_run / "factors.h5") as store:
        assert store.attrs["segments"]  # the segments STORM was trained with travel with the factors
    trading = quickstart_run / "trading"
    results = pd.read_csv(trading / "results.csv")
    assert set(results["agent"]) == {"buy_and_hold", "ppo_storm"} and results["stock"].nunique() == 1
    (stock,) = results["stock"].unique()
    env = results[results["engine"] == "env"].set_index("agent")[["APY", "CW", "MDD"]]
    referee = results[results["engine"] == "backtrader"].set_index("agent")[["APY", "CW", "MDD"]]
    np.testing.assert_allclose(env.to_numpy(), referee.loc[env.index].to_numpy(), rtol=1e-9)
    values = pd.read_csv(trading / "values" / f"{stock}_ppo_storm_seed0.csv", index_col=0, parse_dates=True)
    segments = Segments.from_config(json.loads((trading / "trade.json").read_text())["segments"])
    assert values.index[0] >= segments.test[0] and values.index[-1] <= segments.test[1]  # test segment only
    assert (quickstart_run / "trading" / "agents" / stock / "ppo_storm" / "seed0" / "best.zip").is_file()
    check_report(
        quickstart_run / "report" / "report.html",
        {"equity_drawdown", "rank_ic", "turnover_holdings", "codebook_usage", "training", f"trading_{stock}"},
    )


def test_quickstart_runs_qrun_and_records_metrics(quickstart_run):
    metrics = pd.read_json(quickstart_run / "metrics.json", typ="series")
    for key in ("IC", "ICIR", "Rank IC", "Rank ICIR", "1day.excess_return_with_cost.annualized_return"):
        assert key in metrics.index
    assert 0.03 < metrics["Rank IC"] < 0.2  # the planted signal is learnable by STORM on Alpha158 (measured 0.071)
    assert metrics["Rank ICIR"] > 0.15
    assert 0.5 < metrics["paper.CW"] < 2.0 and "paper.market.APY" in metrics.index
    assert (quickstart_run / "workflow.yaml").exists() and (quickstart_run / "mlruns.db").exists()
    (checkpoints,) = [p for p in (quickstart_run / "checkpoints").iterdir() if p.suffix != ".lock"]  # one market
    assert {"best.pt", "last.pt", "code_usage.json", "history.json"} <= {p.name for p in checkpoints.iterdir()}


def test_quickstart_reuses_valid_stages(quickstart_run):
    done = quickstart(quickstart_run)
    assert "market: reusing" in done.stderr and "provider: reusing" in done.stderr
    assert "factors: reusing" in done.stderr and "0 trained, 1 reused" in done.stderr
    assert "resuming from" in (quickstart_run / "qrun.log").read_text()  # training is not redone


def test_a_damaged_checkpoint_in_a_copied_run_is_one_line_and_both_folders_stay(quickstart_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(quickstart_run, copy)
    (last,) = (copy / "checkpoints").glob("*/last.pt")
    last.write_bytes(last.read_bytes()[:5000])
    damaged, original = last.read_bytes(), folder_digest(quickstart_run)
    cmd = [sys.executable, "-m", "storm_bt.cli", "quickstart", "--run-dir", str(copy), "--stocks", "30"]
    done = subprocess.run([*cmd, "--days", "750", "--agent-steps", "4000"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (message,) = [line for line in done.stderr.splitlines() if "qrun failed" in line]
    assert f"CheckpointError: {last}: cannot read this checkpoint" in message and "qrun.log" in message
    assert last.read_bytes() == damaged and folder_digest(quickstart_run) == original


def test_learning_model_beats_shuffled_label_control(quickstart_run):
    """LightGBM (the baseline workflow's settings) on the quickstart's data: trained on labels shuffled
    within each day it finds no signal."""
    config = load_workflow(quickstart_run / "workflow.yaml")
    lgbm = load_workflow(ROOT / "experiments" / "workflow_lgbm_alpha158_dj30.yaml")["task"]["model"]
    qlib.init(**{k: v for k, v in config["qlib_init"].items() if k != "exp_manager"})
    dataset = init_instance_by_config(config["task"]["dataset"])
    train = dataset.prepare("train", col_set=["feature", "label"], data_key=DataHandlerLP.DK_L)
    valid = dataset.prepare("valid", col_set=["feature", "label"], data_key=DataHandlerLP.DK_L)
    test = dataset.prepare("test", col_set="feature", data_key=DataHandlerLP.DK_I)
    label = dataset.prepare("test", col_set="label", data_key=DataHandlerLP.DK_R)["LABEL0"]
    params = {k: v for k, v in lgbm["kwargs"].items() if k not in ("loss", "early_stopping_rounds", "num_boost_round")}
    params.update(objective="regression", verbosity=-1)

    def fit_predict(y_train: np.ndarray, y_valid: np.ndarray) -> pd.Series:
        booster = lgb.train(
            params,
            lgb.Dataset(train["feature"], y_train),
            num_boost_round=500,
            valid_sets=[lgb.Dataset(valid["feature"], y_valid)],
            callbacks=[lgb.early_stopping(50, verbose=False)],
        )
        return pd.Series(booster.predict(test.to_numpy()), index=test.index)

    def shuffled(frame: pd.DataFrame, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        y = frame["label"]["LABEL0"]
        return y.groupby(level="datetime").transform(lambda g: rng.permutation(g.to_numpy())).to_numpy()

    real = rank_ic_summary(fit_predict(train["label"].to_numpy().ravel(), valid["label"].to_numpy().ravel()), label)
    control = rank_ic_summary(fit_predict(shuffled(train, 1), shuffled(valid, 2)), label)
    assert real["RankIC"] > 0.03
    assert abs(control["RankIC"]) < 0.03
    assert real["RankIC"] > control["RankIC"] + 0.03
