"""Walk-forward `storm-bt evaluate` on a synthetic market: significance that separates skill from a
placebo, processors fit per fold, identical tables whatever the job count, stitched spans."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from qlib.data.dataset.handler import DataHandlerLP

from storm_bt.cli import main
from storm_bt.data.csv_source import load_csv_dir
from storm_bt.data.provider import read_calendar, write_provider
from storm_bt.data.synthetic import SyntheticMarketConfig, write_market_csvs
from storm_bt.io import machine
from storm_bt.metrics import daily_rank_ic
from storm_bt.model.trainer import BEST, HISTORY
from storm_bt.pipelines.eval_config import EvalConfig, Selection
from storm_bt.pipelines.evaluate import plan_evaluation
from storm_bt.pipelines.report import write_report
from storm_bt.pipelines.selection import choose_on_past_folds, choose_on_valid
from storm_bt.pipelines.significance import read_span_series, valid_difference
from storm_bt.pipelines.snooping import family_from_results, family_test
from storm_bt.pipelines.walk_forward import format_walk_forward_tables
from storm_bt.workflows.prepared import prepare_handler
from storm_bt.workflows.qrun import (
    CHECKPOINTS,
    DONE_MARKER,
    kept_valid_rank_ic,
    load_workflow,
    qrun_machine,
    qrun_wall,
    retarget,
)
from storm_bt.workflows.rolling import RollingSpec, rolling_folds
from storm_bt.workflows.span import (
    SPAN_DONE,
    analyse_span,
    ensemble_scores,
    span_finished,
    span_runs,
    stitch_predictions,
)

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
MARKET = SyntheticMarketConfig(n_stocks=20, n_days=640, seed=3, signal_strength=0.2)
TEST_START = 400  # first test session; two folds of 120 sessions follow


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> tuple[Path, Path]:
    """The synthetic market's CSV folder and its Qlib provider."""
    tmp = tmp_path_factory.mktemp("walk_forward_market")
    write_market_csvs(MARKET, tmp / "csv")
    write_provider(load_csv_dir(tmp / "csv"), tmp / "qlib", "synth")
    return tmp / "csv", tmp / "qlib"


def _rolling(provider: Path) -> dict:
    first = read_calendar(provider)[TEST_START]
    return {"first_test": f"{first:%Y-%m-%d}", "step": 120, "valid_sessions": 100, "min_train_sessions": 200}


def _evaluate(config: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "storm_bt.cli", "evaluate", "--config", str(config), "--out", str(out), *flags]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def walk_forward(market, tmp_path_factory) -> tuple[Path, Path]:
    """LightGBM and its shuffled-label placebo, one seed, two yearly-sized folds, on two processes."""
    _, provider = market
    tmp = tmp_path_factory.mktemp("walk_forward")
    config = {
        "seeds": [0],
        "baseline": "LightGBM",
        "data": {"provider_uri": str(provider), "market": "synth", "benchmark": "SYNTH_EW"},
        "rolling": _rolling(provider),
        "models": {
            "LightGBM": str(EXPERIMENTS / "workflow_lgbm_alpha158_dj30.yaml"),
            "Shuffled labels": str(EXPERIMENTS / "workflow_lgbm_alpha158_dj30_shuffled.yaml"),
        },
    }
    path = tmp / "evaluate.yaml"
    path.write_text(json.dumps(config))
    _evaluate(path, tmp / "jobs2", "--jobs", "2", "--threads", "1")
    return path, tmp / "jobs2"


def test_significance_separates_a_learning_model_from_a_shuffled_label_placebo(walk_forward):
    _, out = walk_forward
    results = pd.read_csv(out / "results.csv").set_index("model")
    assert (results["folds"] == 2).all() and (results["RankIC.days"] >= 235).all()
    assert results.loc["LightGBM", "RankIC.t"] > 3.0
    assert abs(results.loc["Shuffled labels", "RankIC.t"]) < 2.0
    assert results.loc["Shuffled labels", "diff.RankIC.t"] < -2.0  # worse than the model it shuffles, significantly
    low, high = results.loc["Shuffled labels", ["diff.ASR.low", "diff.ASR.high"]]
    assert low < results.loc["Shuffled labels", "diff.ASR"] < high
    assert np.isnan(results.loc["LightGBM", "diff.RankIC"])  # the baseline is not tested against itself
    assert results["valid.RankIC"].isna().all()  # LightGBM keeps no per-epoch valid history
    tables = (out / "tables.md").read_text()
    assert "Newey-West" in tables and "Δ Rank IC vs LightGBM" in tables and "| Shuffled labels, seeds (n=1) |" in tables
    t = results.loc["LightGBM", "RankIC.t"]
    assert f"| {results.loc['LightGBM', 'Rank IC']:.4f} | {t:.2f} |" in tables
    assert json.loads((out / "evaluate.json").read_text())["family"] is None  # one model beside the baseline
    assert "as a family" not in tables
    cpu = machine()["cpu"]  # each run names the CPU it trained on: another CPU rounds differently
    assert (results["trained_on"] == f"{cpu} (2)").all() and f"Trained on: {cpu} (4 runs)." in tables


def test_the_tables_t_over_seeds_is_the_one_sample_t_of_the_seeds_differences(walk_forward):
    _, out = walk_forward
    results = pd.read_csv(out / "results.csv", dtype={"seed": str})
    described = json.loads((out / "evaluate.json").read_text())
    placebo = results[results["model"] == "Shuffled labels"].iloc[0].to_dict()
    differences = [-0.010, -0.004, -0.013]  # three seeds of the placebo, as if retrained
    seeds = pd.DataFrame([placebo | {"seed": str(k), "diff.RankIC": d} for k, d in enumerate(differences)])
    tables = format_walk_forward_tables(
        pd.concat([results[results["model"] == "LightGBM"], seeds]), described, pd.DataFrame()
    )
    expected = np.mean(differences) / (np.std(differences, ddof=1) / np.sqrt(len(differences)))
    factor = tables.split("## Factor quality")[1].split("##")[0]
    rows = {line.split(" |")[0]: line for line in factor.splitlines() if line.startswith("| ")}
    # then the valid folds' Δ and its t: n/a, as LightGBM keeps no valid Rank IC
    assert rows["| Shuffled labels, seeds (n=3)"].endswith(f"| {expected:.2f} | n/a | n/a |")
    assert rows["| LightGBM, seeds (n=1)"].endswith("| n/a | n/a | n/a |")  # one seed has no spread; no baseline, no Δ
    assert "t over seeds (Δ)" in tables and "n - 1 degrees of freedom" in tables


def test_the_valid_difference_averages_a_folds_seeds_and_takes_the_folds_as_replicates():
    index = pd.MultiIndex.from_product([[0, 1], [0, 1, 2]], names=["seed", "fold"])
    baseline = pd.Series([0.01, 0.02, 0.03, 0.02, 0.01, np.nan], index)
    model = baseline + np.array([0.01, 0.0, 0.02, 0.03, 0.02, 0.05])
    per_fold = np.array([0.02, 0.01, 0.02])  # seeds averaged per fold; fold 2 has seed 0's pair alone
    result = valid_difference(model, baseline)
    assert result["diff.valid.RankIC"] == pytest.approx(per_fold.mean())
    assert result["diff.valid.RankIC.t"] == pytest.approx(per_fold.mean() / (per_fold.std(ddof=1) / np.sqrt(3)))
    without = valid_difference(model, baseline * np.nan)  # a baseline without valid Rank IC (LightGBM)
    assert np.isnan(without["diff.valid.RankIC"]) and np.isnan(without["diff.valid.RankIC.t"])


def test_a_span_names_its_runs_relative_to_itself_and_earlier_records_are_read_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    span = Path("out", "spans", "model", "0_digest")
    span.mkdir(parents=True)
    (span / SPAN_DONE).write_text(json.dumps({"runs": [["../../../runs/model/fold00", "../../../runs/model/fold01"]]}))
    assert [[run.resolve() for run in runs] for runs in span_runs(span)] == [
        [(tmp_path / "out" / "runs" / "model" / f"fold0{k}") for k in (0, 1)]
    ]
    (span / SPAN_DONE).write_text("out/runs/model/fold00 out/runs/model/fold01\n")  # before: from where it ran
    assert span_runs(span) == [[Path("out/runs/model/fold00"), Path("out/runs/model/fold01")]]


def test_the_stitched_span_is_the_folds_test_predictions_and_reports_like_a_run(market, walk_forward, tmp_path):
    _, provider = market
    _, out = walk_forward
    results = pd.read_csv(out / "results.csv").set_index("model")
    span = out / results.loc["LightGBM", "span"]
    runs = sorted((out / "runs" / "lightgbm").glob("fold*"))
    assert [r.name[:13] for r in runs] == ["fold00_seed0_", "fold01_seed0_"]
    pred, _ = stitch_predictions(runs)
    folds = rolling_folds(RollingSpec.from_dict(_rolling(provider)), read_calendar(provider))
    days = pred.index.get_level_values("datetime")
    assert days.min() == folds[0].test[0] and days.max() == folds[-1].test[1]
    report = write_report(span, tmp_path)
    assert report.is_file() and (tmp_path / "rank_ic.png").is_file()


def test_a_span_named_relative_to_the_working_folder_is_finished_there(market, walk_forward, tmp_path, monkeypatch):
    _, provider = market
    _, out = walk_forward
    runs = [str(r) for r in sorted((out / "runs" / "lightgbm").glob("fold*"))]
    monkeypatch.chdir(tmp_path)  # analyse_span moves into the span; monkeypatch moves back afterwards
    analyse_span([runs], "spans/lightgbm", {"provider_uri": str(provider)}, records=[])
    monkeypatch.chdir(tmp_path)
    assert span_finished("spans/lightgbm")  # where `storm-bt evaluate --out RELATIVE` looks: never rebuilt


def test_the_plan_of_a_walk_forward_counts_its_fold_runs(walk_forward):
    config, out = walk_forward
    plan = plan_evaluation(EvalConfig.from_yaml(config), out, threads=1, folds=[1])
    assert plan.to_dict("list") == {
        "model": ["LightGBM", "Shuffled labels"],
        "runs": [1, 1],
        "finished": [1, 1],
        "to train": [0, 0],
        "other versions": [0, 0],
    }


def test_jobs_1_and_jobs_2_give_byte_identical_tables_and_a_rerun_reuses_everything(walk_forward):
    config, out = walk_forward
    whole = (out / "tables.md").read_bytes()
    screen = ("--folds", "1", "--models", "LightGBM")
    done = _evaluate(config, out, "--jobs", "2", "--threads", "1", *screen)
    assert "1 folds x 1 models x 1 seeds: 1 runs (1 finished before), 0 fold handlers to prepare" in done.stderr
    screened = out / "subsets" / "models-LightGBM_folds-1" / "tables.md"
    text = screened.read_text()
    assert "Walk-forward: 1 folds" in text and "Shuffled" not in text
    assert (out / "tables.md").read_bytes() == whole  # a screening subset leaves the whole evaluation's tables
    serial = out.parent / "jobs1"  # the run trained beside another at --jobs 2, trained afresh alone
    done = _evaluate(config, serial, "--jobs", "1", "--threads", "1", *screen)
    assert "1 runs (0 finished before), 1 fold handlers to prepare" in done.stderr
    assert (serial / screened.relative_to(out)).read_bytes() == screened.read_bytes()
    _evaluate(config, out, "--jobs", "1", "--threads", "1", "--baseline", "Shuffled labels")
    against = pd.read_csv(out / "subsets" / "baseline-Shuffled_labels" / "results.csv").set_index("model")
    results = pd.read_csv(out / "results.csv").set_index("model")
    assert against.loc["LightGBM", "diff.RankIC"] == pytest.approx(-results.loc["Shuffled labels", "diff.RankIC"])
    assert np.isnan(against.loc["Shuffled labels", "diff.RankIC"])


def _keep_one_epoch(run_dir: Path, valid_rank_ic: float) -> None:
    """Give a finished run the training history of a model that kept its one epoch."""
    (run_dir / CHECKPOINTS).mkdir(exist_ok=True)
    (run_dir / CHECKPOINTS / HISTORY).write_text(json.dumps([{"epoch": 1, "valid_RankIC": valid_rank_ic}]))
    torch.save({"config": {}, "model": {}, "epoch": 1}, run_dir / CHECKPOINTS / BEST)


def test_choosing_on_valid_takes_the_best_candidate_per_fold_and_refuses_an_undecidable_fold():
    valid = pd.DataFrame({"a": [0.01, 0.02, np.nan], "b": [0.03, 0.02, 0.00]})
    assert choose_on_valid(valid, "here").tolist() == ["b", "a", "b"]  # a tie goes to the first listed
    with pytest.raises(ValueError, match=r"here: no candidate has a valid Rank IC in fold\(s\) \[1\]"):
        choose_on_valid(pd.DataFrame({"a": [0.01, np.nan], "b": [0.0, np.nan]}), "here")


def test_choosing_on_past_folds_reads_only_the_record_known_before_each_fold():
    days = pd.bdate_range("2020-01-01", periods=6)
    record = pd.DataFrame({"a": [0.02, 0.02, 0.0, 0.0, 0.1, 0.1], "b": [0.0, 0.0, 0.05, 0.05, 0.0, np.nan]}, days)
    cutoffs = pd.Series({0: days[0] - pd.Timedelta(days=1), 1: days[1], 2: days[3], "after": days[5]})
    chosen = choose_on_past_folds(record, cutoffs)
    # no record yet: the first listed; then a leads (0.02 vs 0); then b (0.025 vs 0.01); at the end a
    # (day 6 counts for neither: b has no value there, and candidates are compared on the same days)
    assert chosen.tolist() == ["a", "a", "b", "a"]
    future = record.copy()
    future.loc[days[4] :] = [[-1.0, 1.0], [-1.0, 1.0]]  # what later days bring never moves an earlier choice
    assert choose_on_past_folds(future, cutoffs).iloc[:3].tolist() == chosen.iloc[:3].tolist()
    assert choose_on_past_folds(future, cutoffs)["after"] == "b"


def test_a_selection_stitches_the_run_chosen_on_valid_in_each_fold_and_is_tested_like_a_model(
    market, walk_forward, tmp_path, monkeypatch
):
    _, provider = market
    config, out = walk_forward
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    valid = {"lightgbm": [0.01, 0.05], "shuffled_labels": [0.02, float("nan")]}  # fold 0: the placebo wins on valid
    for slug, values in valid.items():
        for run_dir, value in zip(sorted((copy / "runs" / slug).glob("fold*")), values, strict=True):
            _keep_one_epoch(run_dir, value)
    raw = json.loads(config.read_text()) | {"selections": {"Chosen on valid": ["LightGBM", "Shuffled labels"]}}
    path = tmp_path / "evaluate.yaml"
    path.write_text(json.dumps(raw))
    done = _evaluate(path, copy, "--jobs", "1", "--threads", "1")
    assert "4 runs (4 finished before), 0 fold handlers to prepare" in done.stderr  # chosen after the fits, no refit

    results = pd.read_csv(copy / "results.csv").set_index("model")
    chosen = results.loc["Chosen on valid"]
    assert chosen["group"] == "selection" and chosen["folds"] == 2
    assert chosen["valid.RankIC"] == pytest.approx(0.035)  # the chosen runs' valid Rank IC: 0.02, then 0.05
    assert chosen["compute_s"] == pytest.approx(results.loc[["LightGBM", "Shuffled labels"], "compute_s"].sum())
    folds = rolling_folds(RollingSpec.from_dict(_rolling(provider)), read_calendar(provider))
    daily = {name: read_span_series(copy / results.loc[name, "span"]).rank_ic for name in results.index}
    expected = pd.concat([daily["Shuffled labels"].loc[: folds[0].test[1]], daily["LightGBM"].loc[folds[1].test[0] :]])
    pd.testing.assert_series_equal(daily["Chosen on valid"], expected, check_names=False)
    paired = daily["Chosen on valid"] - daily["LightGBM"]
    assert chosen["diff.RankIC"] == pytest.approx(paired.mean())  # tested against the baseline like any row
    # and on the valid folds against LightGBM's run of the same fold: +0.01, then 0.0 (t over two folds: 1)
    assert chosen["diff.valid.RankIC"] == pytest.approx(0.005)
    assert chosen["diff.valid.RankIC.t"] == pytest.approx(1.0)
    placebo = results.loc["Shuffled labels"]  # fold 1 has no valid Rank IC: one fold, no t
    assert placebo["diff.valid.RankIC"] == pytest.approx(0.01) and np.isnan(placebo["diff.valid.RankIC.t"])
    # `storm-bt family` reads the same valid record back from the results file, best first: the spans
    # copied with the fixture's folder name their runs relative to themselves, so the copy reads its own
    report = tmp_path / "family.md"
    assert main(["family", str(copy / "results.csv"), "--baseline", "LightGBM", "--out", str(report)]) == 0
    valid_table = report.read_text().split("## The same models on the valid folds")[1]
    assert valid_table.index("| Shuffled labels | 0.0200 | +0.0100 | n/a |") < valid_table.index(
        "| Chosen on valid | 0.0350 | +0.0050 | 1.00 |"
    )
    # a results file written before spans were relative to it names them from the folder the evaluation ran in
    monkeypatch.chdir(tmp_path)
    earlier = pd.read_csv(copy / "results.csv")
    earlier["span"] = [os.path.relpath(copy / span, tmp_path) for span in earlier["span"]]
    (copy / "subsets" / "earlier").mkdir(parents=True)
    earlier.to_csv(copy / "subsets" / "earlier" / "results.csv", index=False)
    again, valid_again, _ = family_from_results([copy / "subsets" / "earlier" / "results.csv"], "LightGBM")
    assert again == family_from_results([copy / "results.csv"], "LightGBM")[0]
    assert valid_again.loc["Chosen on valid", "diff.valid.RankIC"] == pytest.approx(0.005)
    shuffled = sorted((copy / "runs" / "shuffled_labels").glob("fold*"))[0]
    shuffled.rename(tmp_path / "moved")
    with pytest.raises(FileNotFoundError, match=rf"was stitched from .*{shuffled.name}, which is not there"):
        family_from_results([copy / "results.csv"], "LightGBM")  # a run not where its span says: named, not n/a
    before = pd.read_csv(out / "results.csv").set_index("model")
    assert results.loc[before.index, "Rank IC"].tolist() == before["Rank IC"].tolist()  # other rows untouched

    tables = (copy / "tables.md").read_text()
    assert "## Chosen on valid: candidates chosen per fold (of 1 seed(s))" in tables
    assert "| LightGBM | 0 | 1 |" in tables and "| Shuffled labels | 1 | 0 |" in tables
    chosen_log = json.loads((copy / "evaluate.json").read_text())["chosen"]
    assert [c["chosen"] for c in chosen_log] == ["Shuffled labels", "LightGBM"]


def test_a_past_folds_selection_takes_the_first_candidate_then_the_better_record(market, walk_forward, tmp_path):
    _, provider = market
    config, out = walk_forward
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    rule = {"candidates": ["Shuffled labels", "LightGBM"], "rule": "past_folds"}
    raw = json.loads(config.read_text()) | {"selections": {"Chosen on the record": rule}}
    path = tmp_path / "evaluate.yaml"
    path.write_text(json.dumps(raw))
    done = _evaluate(path, copy, "--jobs", "1", "--threads", "1")
    assert "4 runs (4 finished before), 0 fold handlers to prepare" in done.stderr

    results = pd.read_csv(copy / "results.csv").set_index("model")
    daily = {name: read_span_series(copy / results.loc[name, "span"]).rank_ic for name in results.index}
    folds = rolling_folds(RollingSpec.from_dict(_rolling(provider)), read_calendar(provider))
    known = slice(None, folds[1].valid[1])  # fold 1 may read fold 0's days whose labels are known by then
    assert daily["LightGBM"].loc[known].mean() > daily["Shuffled labels"].loc[known].mean()
    expected = pd.concat([daily["Shuffled labels"].loc[: folds[0].test[1]], daily["LightGBM"].loc[folds[1].test[0] :]])
    pd.testing.assert_series_equal(daily["Chosen on the record"], expected, check_names=False)
    assert results.loc["Chosen on the record", "group"] == "selection"
    tables = (copy / "tables.md").read_text()
    assert "| Shuffled labels | 1 | 0 |" in tables and "| LightGBM | 0 | 1 |" in tables
    assert "Recommended after the record (chosen on all of it): LightGBM (1 of 1 seed(s))." in tables
    described = json.loads((copy / "evaluate.json").read_text())
    assert described["recommended"] == [{"selection": "Chosen on the record", "seed": 0, "chosen": "LightGBM"}]
    assert described["selections"] == {"Chosen on the record": rule}

    others = pd.DataFrame({m: daily[m] for m in ["Shuffled labels", "Chosen on the record"]})
    family = family_test(daily["LightGBM"], others)  # two models beside the baseline: tested as a family
    assert described["family"] == family.to_dict() and described["family"]["days"] >= 235
    assert "## The models as a family (the search counted)" in tables
    assert f"Hansen's SPA p-value that no model beats LightGBM: **{family.p_consistent:.3f}**" in tables

    # The same family from the results file, as `storm-bt family` reads a search spread over evaluations;
    # a model named in two files comes from the last one: a stale span listed first is never read.
    stale = pd.read_csv(copy / "results.csv").assign(span=str(tmp_path / "nowhere"))
    stale.to_csv(tmp_path / "stale.csv", index=False)
    report = tmp_path / "family.md"
    argv = ["family", str(tmp_path / "stale.csv"), str(copy / "results.csv"), "--baseline", "LightGBM"]
    assert main([*argv, "--out", str(report)]) == 0
    assert f"**{family.p_consistent:.3f}**" in report.read_text()
    assert f"| Shuffled labels | {copy / 'results.csv'} |" in report.read_text()
    assert main(["family", str(copy / "results.csv"), str(tmp_path / "stale.csv"), "--baseline", "LightGBM"]) == 2


def _core_provider(market: tuple[Path, Path], root: Path) -> list[str]:
    """A copy of the market's provider with a universe 'core' of its first 8 names beside 'synth'."""
    csv, provider = market
    shutil.copytree(provider, root)
    panel = load_csv_dir(csv)
    core = sorted(panel["instrument"].unique())[:8]
    write_provider(panel[panel["instrument"].isin(core)], root, "core")
    return core


def test_a_model_trained_on_a_wider_universe_is_judged_on_its_score_universe_alone(market, tmp_path):
    core = _core_provider(market, tmp_path / "qlib")
    lgbm = str(EXPERIMENTS / "workflow_lgbm_alpha158_dj30.yaml")
    config = {
        "seeds": [0],
        "data": {"provider_uri": str(tmp_path / "qlib"), "market": "synth", "benchmark": "SYNTH_EW"},
        "rolling": _rolling(tmp_path / "qlib"),
        "models": {"All names": lgbm, "Core names": {"workflow": lgbm, "score_universe": "core"}},
    }
    path = tmp_path / "evaluate.yaml"
    path.write_text(json.dumps(config))
    _evaluate(path, tmp_path / "out", "--jobs", "1", "--threads", "1")
    runs = {name: sorted((tmp_path / "out" / "runs" / name).glob("fold*")) for name in ("all_names", "core_names")}
    whole, scored = (stitch_predictions(runs[name]) for name in ("all_names", "core_names"))
    in_core = whole[0].index.get_level_values("instrument").isin(core)
    assert len(whole[0].index.get_level_values("instrument").unique()) == 20
    pd.testing.assert_frame_equal(scored[0], whole[0][in_core])  # same training, only the record differs
    pd.testing.assert_frame_equal(scored[1], whole[1][in_core])
    results = pd.read_csv(tmp_path / "out" / "results.csv").set_index("model")
    span = read_span_series(tmp_path / "out" / results.loc["Core names", "span"]).rank_ic
    expected = daily_rank_ic(whole[0]["score"][in_core], whole[1].iloc[:, 0][in_core]).dropna()
    pd.testing.assert_series_equal(span, expected, check_names=False)
    assert (
        "judged on another's (score_universe): Core names on core's names."
        in (tmp_path / "out" / "tables.md").read_text()
    )


def test_a_score_universe_the_model_did_not_train_on_is_refused_naming_the_names(market, tmp_path):
    _core_provider(market, tmp_path / "qlib")
    lgbm = str(EXPERIMENTS / "workflow_lgbm_alpha158_dj30.yaml")
    config = {
        "seeds": [0],
        "data": {"provider_uri": str(tmp_path / "qlib"), "market": "core", "benchmark": "SYNTH_EW"},
        "rolling": _rolling(tmp_path / "qlib"),
        "models": {"Core names": {"workflow": lgbm, "score_universe": "synth"}},
    }
    path = tmp_path / "evaluate.yaml"
    path.write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "storm_bt.cli", "evaluate", "--config", str(path), "--out", str(tmp_path / "out")]
    done = subprocess.run([*cmd, "--folds", "0", "--threads", "1"], capture_output=True, text=True, check=False)
    log = done.stderr + "".join(p.read_text() for p in (tmp_path / "out").rglob("*.log"))
    assert done.returncode != 0
    assert "predicted no score for 12 names of universe 'synth'" in log


def test_processors_fit_per_fold_ignore_prices_after_the_folds_train_end(market, tmp_path):
    csv, provider = market
    (fold, *_) = rolling_folds(RollingSpec.from_dict(_rolling(provider)), read_calendar(provider))
    panel = load_csv_dir(csv)
    later = panel["date"] > fold.train[1]
    shock = np.random.default_rng(0).uniform(0.5, 1.5, int(later.sum()))
    for column in ("open", "high", "low", "close", "adj_close"):
        panel.loc[later, column] *= shock
    write_provider(panel, tmp_path / "perturbed", "synth")

    def processed(qlib_dir: Path, name: str) -> DataHandlerLP:
        config = retarget(
            load_workflow(EXPERIMENTS / "workflow_lgbm_alpha158_dj30.yaml"), qlib_dir, "synth", "SYNTH_EW", fold
        )
        with open(prepare_handler(config, str(tmp_path / name)), "rb") as fh:
            return pickle.load(fh)

    original, perturbed = processed(provider, "original.pkl"), processed(tmp_path / "perturbed", "perturbed.pkl")
    train, test = slice(*fold.train), slice(*fold.test)
    for key in (DataHandlerLP.DK_I, DataHandlerLP.DK_L):
        pd.testing.assert_frame_equal(
            original.fetch(train, col_set="feature", data_key=key),
            perturbed.fetch(train, col_set="feature", data_key=key),
        )
    moved = original.fetch(test, col_set="feature") - perturbed.fetch(test, col_set="feature")
    assert moved.abs().to_numpy().max() > 0.1  # the perturbation is real: later features did move


def test_ensemble_is_the_mean_of_cross_sectionally_standardised_scores():
    index = pd.MultiIndex.from_product(
        [pd.to_datetime(["2020-01-02", "2020-01-03"]), list("abc")], names=["datetime", "instrument"]
    )
    one = pd.DataFrame({"score": [1.0, 2.0, 3.0, 0.0, 0.0, 3.0]}, index=index)
    two = pd.DataFrame({"score": [300.0, 200.0, 100.0, 5.0, 6.0, 7.0]}, index=index)  # another scale: no dominance
    mixed = ensemble_scores([one, two])["score"]
    np.testing.assert_allclose(mixed.loc["2020-01-02"].to_numpy(), [0.0, 0.0, 0.0], atol=1e-12)
    assert mixed.loc[("2020-01-03", "c")] > mixed.loc[("2020-01-03", "b")] > mixed.loc[("2020-01-03", "a")]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"trading": {"config": "trading_dj30.yaml"}}, "trading: runs on one split"),
        ({"data": {"fractions": [0.6, 0.2, 0.2]}}, "exclude each other"),
        ({"baseline": "XGBoost"}, "baseline 'XGBoost' is not one of the models"),
        ({"seeds": [0, 0]}, "distinct"),
        ({"seeds": [0, "one"]}, "whole numbers"),
        ({"rolling": {"first_test": "2012-01-01", "step": 1}}, "larger than the embargo"),
        ({"selections": {"Chosen": ["LightGBM"]}}, "'Chosen' needs at least two distinct candidates"),
        ({"selections": {"Chosen": ["LightGBM", "XGBoost"]}}, r"'Chosen' names \['XGBoost'\]"),
        ({"selections": {"lightgbm": ["LightGBM", "LightGBM"]}}, "'lightgbm' is already the name of a model"),
        ({"selections": ["LightGBM"]}, "selections must map a name to a list"),
        ({"rolling": None, "selections": {"Chosen": ["LightGBM", "L2"]}}, "they need a rolling: block"),
        ({"selections": {"Chosen": {"candidates": ["LightGBM", "L2"], "rule": "test"}}}, "Chosen: rule must be one of"),
        ({"selections": {"Chosen": {"candidates": ["LightGBM", "L2"], "on": "valid"}}}, r"unknown keys \['on'\]"),
        ({"selections": {"Chosen": {"candidates": "LightGBM"}}}, "'Chosen' must be a list of candidate model names"),
    ],
)
def test_bad_rolling_configs_are_refused_naming_the_key(extra, message):
    models = {"LightGBM": "workflow_lgbm_alpha158_dj30.yaml", "L2": "workflow_lgbm_alpha158_dj30_shuffled.yaml"}
    raw = {"models": models, "rolling": {"first_test": "2012-01-01"}} | extra
    with pytest.raises(ValueError, match=message):
        EvalConfig.from_dict(raw, base=EXPERIMENTS)


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("evaluate_*.yaml")), ids=lambda p: p.name)
def test_shipped_evaluate_configs_load_and_share_the_dj30_folds(path):
    cfg = EvalConfig.from_yaml(path)
    assert cfg.entries and all(entry.workflow.is_file() for entry in cfg.entries)
    if cfg.rolling is not None:  # every walk-forward on DJ30 is judged on the same folds
        assert cfg.rolling == EvalConfig.from_yaml(EXPERIMENTS / "evaluate_dj30_rolling.yaml").rolling


def test_screening_subsets_name_what_the_config_lacks_and_take_other_seeds():
    cfg = EvalConfig.from_yaml(EXPERIMENTS / "evaluate_dj30.yaml")
    assert [m.name for m in cfg.subset(models=["LightGBM"]).models] == ["LightGBM"]
    assert cfg.subset(seeds=[1]).seeds == [1]
    assert cfg.subset(seeds=[0, 1, 2, 3, 4, 5]).seeds == [0, 1, 2, 3, 4, 5]  # more seeds, to confirm
    assert cfg.subset().seeds == cfg.seeds
    for bad in ([1, 1], [-1]):
        with pytest.raises(ValueError, match=r"seeds must be distinct whole numbers from 0, got \[-?1"):
            cfg.subset(seeds=bad)
    with pytest.raises(ValueError, match="--models: 'XGBoost'"):
        cfg.subset(models=["XGBoost"])
    assert cfg.subset(baseline="LightGBM").baseline_name == "LightGBM"
    with pytest.raises(ValueError, match="--baseline: 'LightGBM' is not among the models run"):
        cfg.subset(models=[cfg.models[0].name], baseline="LightGBM")


def test_a_selection_named_in_models_brings_its_candidates_and_is_dropped_otherwise():
    models = {"LightGBM": "workflow_lgbm_alpha158_dj30.yaml", "L2": "workflow_lgbm_alpha158_dj30_shuffled.yaml"}
    raw = {"models": models, "rolling": {"first_test": "2012-01-01"}, "selections": {"Chosen": ["LightGBM", "L2"]}}
    cfg = EvalConfig.from_dict(raw, base=EXPERIMENTS)
    chosen = cfg.subset(models=["Chosen"])
    assert [m.name for m in chosen.models] == ["LightGBM", "L2"]
    assert chosen.selections == {"Chosen": Selection(["LightGBM", "L2"], "valid")}
    assert cfg.subset(models=["LightGBM", "L2"]).selections == {}  # rows are what --models names
    assert cfg.subset().selections == cfg.selections


def test_a_finished_run_records_its_wall_time_and_machine_and_earlier_records_are_read_as_written(
    walk_forward, tmp_path
):
    _, out = walk_forward
    run = next((out / "runs" / "lightgbm").glob("fold00_seed0_*"))
    record = json.loads((run / DONE_MARKER).read_text())
    assert record["machine"] == machine() == qrun_machine(run) and qrun_wall(run) == record["wall_s"] > 0
    (tmp_path / DONE_MARKER).write_text("12.5\n")  # before runs named their machine: the wall seconds alone
    assert qrun_wall(tmp_path) == 12.5 and qrun_machine(tmp_path) is None


@pytest.mark.parametrize("kept", [3, 1], ids=["best-epoch", "last-epoch-without-selection"])
def test_a_runs_valid_rank_ic_is_that_of_the_epoch_it_kept(tmp_path, kept):
    assert np.isnan(kept_valid_rank_ic(tmp_path))  # no training history: a model without epochs
    (tmp_path / CHECKPOINTS).mkdir()
    history = [
        {"epoch": 1, "valid_RankIC": 0.01},
        {"epoch": 2, "valid_RankIC": float("nan")},
        {"epoch": 3, "valid_RankIC": 0.03},
    ]
    (tmp_path / CHECKPOINTS / HISTORY).write_text(json.dumps(history))
    torch.save({"config": {}, "model": {}, "epoch": kept}, tmp_path / CHECKPOINTS / BEST)
    assert kept_valid_rank_ic(tmp_path) == history[kept - 1]["valid_RankIC"]
