"""``storm-bt evaluate``: the config is checked before anything runs, and runs are keyed by what they ran.

The end-to-end evaluation (qrun runs, tables, reuse) is in test_workflow.py, on the quickstart's market.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from storm_bt.pipelines import eval_config
from storm_bt.pipelines.eval_config import EvalConfig, model_workflow, run_folder
from storm_bt.pipelines.evaluate import format_eval_tables
from storm_bt.workflows.qrun import check_workflow_split

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
        "strategy": {}, "seeds": [0, 1, 2], "overrides": {}, "versions": {"torch": "2.13.0"},
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
