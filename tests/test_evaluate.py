"""``storm-bt evaluate``: the config is checked before anything runs, and runs are keyed by what they ran.

The end-to-end evaluation (qrun runs, tables, reuse) is in test_workflow.py, on the quickstart's market.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import folder_digest

from storm_bt.pipelines import eval_config
from storm_bt.pipelines.eval_config import SUBSET_NAME_CHARS, EvalConfig, model_workflow, run_folder, subset_folder
from storm_bt.pipelines.evaluate import format_eval_tables
from storm_bt.workflows.qrun import check_workflow_split
from storm_bt.workflows.segments import Segments

ROOT = Path(__file__).resolve().parents[1]

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _raw(**extra) -> dict:
    return {"seeds": [0, 1, 2], "models": {"STORM": "workflow_storm_small_dj30.yaml"}} | extra


def test_shipped_evaluation_config_loads_with_paths_beside_it():
    cfg = EvalConfig.from_yaml(EXPERIMENTS / "evaluate_dj30.yaml")
    assert len(cfg.seeds) >= 3 and cfg.models[0].workflow.parent == EXPERIMENTS
    assert all(m.workflow.is_file() for m in [*cfg.models, *cfg.ablations])
    assert Path(cfg.trading["config"]).is_file()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_raw(extra=1), "unknown keys"),
        (_raw(models={"STORM": "no_such_workflow.yaml"}), "not found"),
        (_raw(models={"A": "workflow_lgbm_alpha158_dj30.yaml", "a": "workflow_lgbm_alpha158_dj30.yaml"}), "unique"),
        (_raw(models={"STORM, 64 days": "workflow_storm_small_dj30.yaml"}), "may not contain ','"),
        (_raw(seeds=[]), "at least one"),
        (_raw(seeds=5), "seeds must be a list of whole numbers, got 5"),
        (_raw(seeds="012"), "seeds must be a list of whole numbers"),
        (_raw(seeds=[1.7]), "seeds must be a list of whole numbers"),
        (_raw(seeds=[True]), "seeds must be a list of whole numbers"),
        (_raw(seeds=[1, 1]), "seeds must be distinct"),
        ({"seeds": [0]}, "missing keys"),
        (_raw(data={"provider": "x"}), "data: unknown keys"),
        (_raw(data={"segments": {}, "fractions": [0.6, 0.2, 0.2]}), "not both"),
        (_raw(trading={"config": "trading_dj30.yaml", "factors_from": "LightGBM"}), "not one of the models"),
        (_raw(models={"STORM": {"workflow": "workflow_storm_small_dj30.yaml", "epochs": 3}}), "kwargs"),
    ],
)
def test_bad_config_names_what_is_wrong(tmp_path, raw, message):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=message):
        EvalConfig.from_dict(raw, base=EXPERIMENTS)
    with pytest.raises(ValueError, match=str(path)):  # the file is named too
        EvalConfig.from_yaml(path)


def test_seed_and_overrides_reach_the_model_and_key_the_run_folder(tmp_path):
    cfg = EvalConfig.from_dict(
        _raw(
            models={
                "STORM (small)": {
                    "workflow": "workflow_storm_small_dj30.yaml",
                    "kwargs": {"epochs": 2, "model_config": {"dropout": 0.1}},
                }
            }
        ),
        base=EXPERIMENTS,
    )
    (entry,) = cfg.models
    data = {"provider_uri": str(tmp_path), "fractions": [0.6, 0.2, 0.2]}
    (tmp_path / "calendars").mkdir()
    (tmp_path / "calendars" / "day.txt").write_text(
        "\n".join(f"{d:%Y-%m-%d}" for d in pd.bdate_range("2015-01-05", periods=400))
    )
    one, two = model_workflow(entry, 1, data, threads=1), model_workflow(entry, 2, data, threads=1)
    assert one["task"]["model"]["kwargs"]["seed"] == 1 and one["task"]["model"]["kwargs"]["epochs"] == 2
    # a nested override changes its own key and keeps the workflow's others (w_recon 0.1)
    assert one["task"]["model"]["kwargs"]["model_config"] == {"w_recon": 0.1, "dropout": 0.1}
    assert one["qlib_init"]["provider_uri"] == str(tmp_path.resolve())
    assert one["task"]["dataset"]["kwargs"]["segments"]["train"][0] == "2015-01-05"
    first = run_folder(tmp_path, "seed1", one, threads=1)
    assert first == run_folder(tmp_path, "seed1", model_workflow(entry, 1, data, threads=1), threads=1)  # same run
    assert first.name.startswith("seed1_")
    assert run_folder(tmp_path, "seed2", two, threads=1) != first
    assert run_folder(tmp_path, "seed1", one, threads=2) != first  # threads change results: another run


def test_a_changed_model_source_is_another_run_and_other_libraries_are_not_hashed(tmp_path, monkeypatch):
    storm = {"task": {"model": {"class": "StormModel", "module_path": "storm_bt.model", "kwargs": {}}}}
    lgbm = {"task": {"model": {"class": "LGBModel", "module_path": "qlib.contrib.model.gbdt", "kwargs": {}}}}
    assert eval_config.model_source_digest("storm_bt.model") == eval_config.model_source_digest(
        "storm_bt.model.factorvae"
    )
    before = run_folder(tmp_path, "run", storm, threads=1), run_folder(tmp_path, "run", lgbm, threads=1)
    monkeypatch.setattr(eval_config, "model_source_digest", lambda m: None if m.startswith("qlib") else "edited")
    assert run_folder(tmp_path, "run", storm, threads=1) != before[0]
    assert run_folder(tmp_path, "run", lgbm, threads=1) == before[1]


def test_a_subset_folder_is_readable_and_a_whole_search_still_fits_a_file_name():
    assert subset_folder({"models": "LightGBM", "seeds": None, "folds": "1"}) == "models-LightGBM_folds-1"
    assert subset_folder({"models": None}) == ""
    search = ",".join(f"STORM (small) variant number {k}" for k in range(18))
    long, other = subset_folder({"models": search}), subset_folder({"models": search + "9"})
    assert len(long) == SUBSET_NAME_CHARS and long.startswith("models-STORM_small_variant_number_0,")
    assert long != other  # cut names stay apart: the digest keys the whole list


def test_missing_provider_is_named_before_any_run(tmp_path):
    cfg = EvalConfig.from_dict(_raw(data={"provider_uri": str(tmp_path / "nowhere")}), base=EXPERIMENTS)
    with pytest.raises(FileNotFoundError, match=r"nowhere.*storm-bt data ingest"):
        model_workflow(cfg.models[0], 0, cfg.data, threads=1)


def test_tables_show_mean_std_over_seeds_and_one_market_row():
    results = pd.DataFrame(
        {
            "group": ["model"] * 3 + ["ablation"] * 2,
            "model": ["STORM"] * 3 + ["STORM ts_only"] * 2,
            "seed": [0, 1, 2, 0, 1],
            "Rank IC": [0.01, 0.02, 0.03, 0.0, 0.01],
            "paper.CW": [1.1, 1.2, 1.3, 1.0, 1.0],
            "paper.market.CW": [1.25] * 5,
        }
    )
    described = {
        "data": {"market": "dj30", "instruments": 29, "provider_uri": "p", "benchmark": "DJ30_EW",
                 "segments": {n: ["a", "b"] for n in ("train", "valid", "test")}, "backtest": ["a", "b"]},
        "label": {"name": "qlib", "expression": "e", "horizon_sessions": 2},
        "costs": {"open_cost": 0.0005, "close_cost": 0.0005, "deal_price": "close"},
        "strategy": {}, "seeds": [0, 1, 2], "overrides": {}, "score_universes": {}, "versions": {"torch": "2.13.0"},
    }  # fmt: skip
    tables = format_eval_tables(results, described)
    pm = tables.split("## Portfolio management")[1].split("##")[0]
    assert "| STORM (n=3) | n/a | 1.2000 ± 0.1000 |" in pm  # APY absent -> n/a; CW mean ± sample std
    assert "| market (DJ30_EW) | n/a | 1.2500 |" in pm
    fq = tables.split("## Factor quality")[1].split("##")[0]
    assert "| STORM (n=3) | n/a | n/a | 0.0200 ± 0.0100 | n/a |" in fq
    ablation = tables.split("## Ablations")[1]
    assert "| STORM ts_only (n=2) | 0.0050 ± 0.0071 |" in ablation and "| STORM (n=3) | 0.0200 ± 0.0100 |" in ablation
    assert "torch 2.13.0" in tables and "`e` (2-session horizon)" in tables


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ({"train": ["2015-01-05", "2015-06-30"], "valid": ["2015-07-01", "2015-09-30"]}, "0 sessions apart"),
        ({"test": ["2015-03-02", "2015-06-01"]}, r"Segments valid .* and test .* are -?\d+ sessions apart"),
        ({"test": ["2016-01-04", "2030-01-02"]}, "outside the data"),
    ],
)
def test_leaky_or_impossible_data_segments_are_refused_before_any_run(tmp_path, segments, message):
    (tmp_path / "calendars").mkdir()
    (tmp_path / "calendars" / "day.txt").write_text(
        "\n".join(f"{d:%Y-%m-%d}" for d in pd.bdate_range("2015-01-05", periods=400))
    )
    good = {
        "train": ["2015-01-05", "2015-06-30"],
        "valid": ["2015-07-06", "2015-09-30"],
        "test": ["2015-10-05", "2016-06-01"],
    }
    cfg = EvalConfig.from_dict(_raw(data={"provider_uri": str(tmp_path), "segments": good}), base=EXPERIMENTS)
    check_workflow_split(model_workflow(cfg.models[0], 0, cfg.data, threads=1))  # the good split passes
    leaky = EvalConfig.from_dict(
        _raw(data={"provider_uri": str(tmp_path), "segments": good | segments}), base=EXPERIMENTS
    )
    with pytest.raises(ValueError, match=message):
        check_workflow_split(model_workflow(leaky.models[0], 0, leaky.data, threads=1))


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


def test_the_plan_names_what_would_train_and_what_is_reused_and_runs_nothing(evaluation):
    out, cmd = evaluation
    before = folder_digest(out)
    same = subprocess.run([*cmd, "--plan"], capture_output=True, text=True, check=False)
    assert same.returncode == 0, same.stderr[-3000:]
    assert "0 of 6 runs to train; 6 finished before are reused." in same.stdout
    other = subprocess.run([*cmd, "--plan", "--threads", "7"], capture_output=True, text=True, check=False)
    assert "6 of 6 runs to train; 0 finished before are reused." in other.stdout
    for model in ("STORM", "LightGBM", "STORM ts_only"):  # runs, finished, to train, other versions
        assert re.search(rf"^\s*{model}\s+2\s+0\s+2\s+2\s*$", other.stdout, re.MULTILINE), other.stdout
    assert folder_digest(out) == before
