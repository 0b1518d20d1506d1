"""Workflow YAMLs load, are consistent, and run end to end through ``qrun`` on the synthetic market."""

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
import pytest
import qlib
from conftest import folder_digest
from qlib.data.dataset.handler import DataHandlerLP
from qlib.utils import init_instance_by_config
from report_checks import check_report
from storm_bt.handlers import label_horizon

from storm_bt.data.calendar import nyse_sessions
from storm_bt.factors.store import FactorStore
from storm_bt.metrics import rank_ic_summary
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


def _quickstart(run_dir: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "storm_bt.cli",
        "quickstart",
        "--run-dir",
        str(run_dir),
        "--stocks",
        "30",
        "--days",
        "750",
        "--agent-steps",
        "4000",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def quickstart_first(tmp_path_factory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("quickstart")
    return run_dir, _quickstart(run_dir).stderr


@pytest.fixture(scope="module")
def quickstart_run(quickstart_first) -> Path:
    return quickstart_first[0]


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
    done = _quickstart(quickstart_run)
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
        assert np.isfinite(store.read("pooled")).all()


def test_factor_export_names_a_folder_without_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "storm_bt.cli", "factors", "export", "--run", str(tmp_path), "--out", "x.h5"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "mlruns.db" in done.stderr


def test_backtrader_topk_crosscheck_script_matches_qlib(quickstart_run):
    """The experiments script replays the run's pred.pkl in backtrader; both engines' metrics agree."""
    script = Path(__file__).resolve().parents[1] / "experiments" / "backtrader_topk_crosscheck.py"
    cmd = [sys.executable, str(script), "--run", str(quickstart_run), "--csv-dir", str(quickstart_run / "market")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    qlib_row = next(line.split()[1:] for line in lines if line.startswith("qlib "))
    backtrader_row = next(line.split()[1:] for line in lines if line.startswith("backtrader "))
    assert qlib_row == backtrader_row  # APY, CW, CR, ASR, MDD, AVO to 4 decimals
    gap = float(next(line for line in lines if "largest relative gap" in line).split(":")[1].split()[0])
    assert gap < 1e-6


def test_report_of_the_quickstart_run_has_rendered_figures(quickstart_run, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "storm_bt.cli", "report", str(quickstart_run), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (stock,) = pd.read_csv(quickstart_run / "trading" / "results.csv")["stock"].unique()
    expected = {"equity_drawdown", "rank_ic", "turnover_holdings", "codebook_usage", "training", f"trading_{stock}"}
    check_report(tmp_path / "report.html", expected)


@pytest.fixture(scope="module")
def evaluation(quickstart_run, tmp_path_factory) -> tuple[Path, list[str]]:
    """`storm-bt evaluate` on the quickstart's market: STORM (1 epoch), LightGBM, one ablation, a tiny
    trading experiment, seeds 0 and 1."""
    tmp = tmp_path_factory.mktemp("evaluate")
    stock = sorted(p.stem for p in (quickstart_run / "market").glob("*.csv"))[0]
    trade = {
        "csv_dir": str(quickstart_run / "market"),
        "stocks": [stock],
        "factors": {"run": "replaced by the evaluation"},
        "agents": [{"name": "ppo_storm", "algo": "ppo", "timesteps": 1000, "eval_every": 500, "n_envs": 2}],
    }
    (tmp / "trade.yaml").write_text(json.dumps(trade))
    experiments = ROOT / "experiments"
    config = {
        "seeds": [0, 1],
        "data": {
            "provider_uri": str(quickstart_run / "qlib_data"),
            "market": "synth",
            "benchmark": "SYNTH_EW",
            "fractions": [0.6, 0.2, 0.2],
        },
        "models": {
            "STORM": {"workflow": str(experiments / "workflow_storm_small_synth.yaml"), "kwargs": {"epochs": 1}},
            "LightGBM": str(experiments / "workflow_lgbm_alpha158_dj30.yaml"),
        },
        "ablations": {
            "STORM ts_only": {
                "workflow": str(experiments / "workflow_storm_small_dj30_ts_only.yaml"),
                "kwargs": {"epochs": 1},
            }
        },
        "trading": {"config": "trade.yaml", "factors_from": "STORM"},
    }
    (tmp / "evaluate.yaml").write_text(json.dumps(config))  # JSON is YAML
    out = tmp / "out"
    cmd = [sys.executable, "-m", "storm_bt.cli", "evaluate", "--config", str(tmp / "evaluate.yaml"), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, cmd


def test_evaluate_tables_are_mean_and_std_over_seeds(evaluation):
    out, _ = evaluation
    results = pd.read_csv(out / "results.csv")
    assert sorted(zip(results["model"], results["seed"], strict=True)) == [
        (m, s) for m in ("LightGBM", "STORM", "STORM ts_only") for s in (0, 1)
    ]
    assert (results["wall_s"] > 0).all() and results["run"].nunique() == 6
    storm = results[results["model"] == "STORM"]
    assert storm["Rank IC"].iloc[0] != storm["Rank IC"].iloc[1]  # the seed reaches the model
    assert results["paper.market.CW"].nunique() == 1  # one benchmark for every model and seed
    tables = (out / "tables.md").read_text()
    cw = storm["paper.CW"]
    assert "| STORM (n=2) | " in tables and f"{cw.mean():.4f} ± {cw.std(ddof=1):.4f}" in tables
    rank_icir = results[results["model"] == "LightGBM"]["Rank ICIR"]
    assert f"{rank_icir.mean():.4f} ± {rank_icir.std(ddof=1):.4f}" in tables
    assert f"| market (SYNTH_EW) | {results['paper.market.APY'].iloc[0]:.4f} |" in tables
    for section in ("## Portfolio management", "## Factor quality", "## Ablations", "## Algorithmic trading"):
        assert section in tables
    ablation_rows = [line for line in tables.split("## Ablations")[1].splitlines() if line.startswith("| STORM")]
    assert [r.split(" (n=")[0] for r in ablation_rows] == ["| STORM", "| STORM ts_only"]


def test_evaluate_records_what_the_tables_were_measured_under(evaluation, quickstart_run):
    out, _ = evaluation
    described = json.loads((out / "evaluate.json").read_text())
    calendar = pd.DatetimeIndex(pd.read_csv(quickstart_run / "qlib_data" / "calendars" / "day.txt", header=None)[0])
    carved = Segments.carve(calendar, (0.6, 0.2, 0.2), embargo=2).to_config()
    assert described["data"]["segments"] == carved and described["data"]["instruments"] == 30
    assert described["label"] == {
        "name": "qlib",
        "expression": "Ref($close, -2)/Ref($close, -1) - 1",
        "horizon_sessions": 2,
    }
    assert described["costs"]["open_cost"] == 0.0005 and described["seeds"] == [0, 1]
    assert {"pyqlib", "torch", "lightgbm", "python"} <= set(described["versions"])
    trading = pd.read_csv(out / "trading.csv")
    assert set(trading["agent"]) == {"buy_and_hold", "ppo_storm"} and set(trading["seed"]) == {0, 1}
    (trade_dir,) = [p for p in (out / "trading").iterdir() if p.suffix != ".lock"]
    assert "storm_seed0" in trade_dir.name  # agents read the first seed's STORM factors


def test_evaluate_rerun_reuses_every_finished_run(evaluation):
    out, cmd = evaluation
    before = (out / "tables.md").read_text()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "6 runs, 6 finished before, 0 to run" in done.stderr and "0 trained, 2 reused" in done.stderr
    assert (out / "tables.md").read_text() == before
