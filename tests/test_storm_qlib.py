"""StormModel inside Qlib on the synthetic market: learns the planted signal, pickles, runs under qrun,
refits on train and valid (as does the LightGBM baseline it is judged against)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import qlib_features
from qlib.contrib.model.gbdt import LGBModel
from qlib.data.dataset import DatasetH
from qlib.workflow import R

from storm_bt.baselines import RefitLGBModel
from storm_bt.data.provider import read_calendar, write_provider
from storm_bt.data.synthetic import SyntheticMarketConfig, make_market
from storm_bt.metrics import rank_ic_summary
from storm_bt.model import StormModel
from storm_bt.workflows.qrun import kept_valid_rank_ic, latest_metrics, load_workflow, retarget, write_workflow
from storm_bt.workflows.runs import load_artifacts
from storm_bt.workflows.segments import Segments
from storm_bt.workflows.span import ensemble_scores

MARKET = SyntheticMarketConfig(n_stocks=24, n_days=600, seed=11, signal_strength=0.25)  # a clear planted signal
TRAINING = {
    "preset": "small",
    "model_config": {"w_recon": 0.1},
    "epochs": 16,
    "batch_size": 16,
    "lr": 2e-3,
    "patience": 6,
    "seed": 0,
    "progress": False,
}


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    path = tmp_path_factory.mktemp("storm_qlib") / "qlib"
    market = make_market(MARKET)
    write_provider(market.panel, path, "synth")
    return path, Segments.carve(read_calendar(path), (0.6, 0.2, 0.2), embargo=2)


@pytest.fixture(scope="module")
def dataset(provider):
    path, seg = provider
    qlib_features(path, ["SYN000"], ["$close"])  # (re)initialise Qlib on this provider
    return DatasetH(_handler(seg, fit_end=seg.train[1]), segments=seg.to_config())


def _handler(seg: Segments, fit_end: pd.Timestamp) -> dict:
    """Alpha158 on the synthetic market over all segments, its processors fitted up to ``fit_end``."""
    return {
        "class": "Alpha158US",
        "module_path": "storm_bt.handlers.alpha158_us",
        "kwargs": {
            "instruments": "synth",
            "start_time": seg.train[0],
            "end_time": seg.test[1],
            "fit_start_time": seg.train[0],
            "fit_end_time": fit_end,
        },
    }


@pytest.fixture(scope="module")
def fitted(dataset):
    return StormModel(**TRAINING).fit(dataset)


class ShuffledLabels:
    """The dataset with each day's labels permuted across stocks: no signal left to learn."""

    def __init__(self, dataset: DatasetH, seed: int) -> None:
        self.handler, self.segments, self._dataset, self._seed = dataset.handler, dataset.segments, dataset, seed

    def prepare(self, segments, col_set, data_key):
        frames = self._dataset.prepare(segments, col_set=col_set, data_key=data_key)
        rng = np.random.default_rng(self._seed)
        return [
            f.groupby(level="datetime", group_keys=False).apply(
                lambda g: g.iloc[rng.permutation(len(g))].set_axis(g.index)
            )
            for f in frames
        ]


def _test_rank_ic(model: StormModel, dataset: DatasetH) -> float:
    label = dataset.prepare("test", col_set="label", data_key="raw").iloc[:, 0]
    return rank_ic_summary(model.predict(dataset, "test"), label)["RankIC"]


def test_storm_learns_the_planted_signal_above_a_shuffled_control(fitted, dataset):
    learned = _test_rank_ic(fitted, dataset)
    control = _test_rank_ic(StormModel(**TRAINING).fit(ShuffledLabels(dataset, seed=1)), dataset)
    assert learned > 0.08  # measured 0.166 (control -0.015) with these settings
    assert learned > control + 0.08
    assert fitted.result.best_valid_rank_ic > 0.08


def test_predictions_cover_the_segment_and_survive_pickling(fitted, dataset, provider):
    _, seg = provider
    pred = fitted.predict(dataset, "test")
    dates = pred.index.get_level_values("datetime")
    assert dates.min() == seg.test[0] and dates.max() == seg.test[1]
    assert pred.groupby(level="datetime").size().eq(MARKET.n_stocks).all()
    assert np.isfinite(pred).all()
    clone = pickle.loads(pickle.dumps(fitted))
    pd.testing.assert_series_equal(clone.predict(dataset, "test"), pred)


def test_prediction_for_a_date_does_not_depend_on_the_segment_end(fitted, dataset, provider):
    _, seg = provider
    full = fitted.predict(dataset, "test")
    cut = full.index.get_level_values("datetime").unique()[20]
    short = fitted.predict(dataset, slice(seg.test[0], cut))
    pd.testing.assert_series_equal(short, full.loc[:cut])


@pytest.mark.parametrize("schedule", [{}, {"pretrain_epochs": 1}], ids=["one-stage", "two-stage"])
def test_storm_workflow_runs_under_qrun_with_paper_metrics(provider, tmp_path, schedule):
    path, seg = provider
    config = retarget(load_workflow("experiments/workflow_storm_small_synth.yaml"), path, "synth", "SYNTH_EW", seg)
    config["task"]["model"]["kwargs"].update(epochs=2, run_dir=str(tmp_path / "run"), progress=False, **schedule)
    workflow = tmp_path / "workflow.yaml"
    write_workflow(config, workflow)
    done = subprocess.run(
        [sys.executable, "-m", "qlib.cli.run", str(workflow)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]

    metrics = latest_metrics(tmp_path)
    for key in ("Rank IC", "Rank ICIR", "paper.APY", "paper.CW", "paper.MDD", "paper.market.APY", "train.loss"):
        assert key in metrics, key
    assert 0.5 < metrics["paper.CW"] < 2.0 and 0 <= metrics["paper.MDD"] < 1
    assert (tmp_path / "run" / "code_usage.json").exists()
    assert ("train.pretraining" in metrics) == bool(schedule)  # the last epoch's flag: 0, the full loss


def test_a_model_of_several_members_runs_under_qrun_and_logs_each_member(provider, tmp_path):
    path, seg = provider
    config = retarget(load_workflow("experiments/workflow_storm_small_synth.yaml"), path, "synth", "SYNTH_EW", seg)
    config["task"]["model"]["kwargs"].update(epochs=2, run_dir="checkpoints", progress=False, members=2)
    write_workflow(config, tmp_path / "workflow.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "qlib.cli.run", "workflow.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    metrics = latest_metrics(tmp_path)
    assert {"Rank IC", "train.member0.loss", "train.member1.loss"} <= set(metrics.index)
    kept = []
    for k in (0, 1):
        history = load_artifacts(tmp_path, (f"storm/member{k}/training_history",))[1].popitem()[1]
        assert [h["epoch"] for h in history] == [1, 2]
        best = torch.load(tmp_path / "checkpoints" / f"member{k}" / "best.pt", weights_only=True)["epoch"]
        kept.append(next(h["valid_RankIC"] for h in history if h["epoch"] == best))
    assert kept_valid_rank_ic(tmp_path) == pytest.approx(np.mean(kept))


def test_fit_refuses_a_split_whose_train_labels_read_valid_prices(dataset, provider, tmp_path):
    path, seg = provider
    calendar = read_calendar(path)
    valid_start = calendar[calendar.get_loc(seg.train[1]) + 1]  # no session between train and valid
    leaky = DatasetH(
        dataset.handler,
        segments={"train": [seg.train[0], seg.train[1]], "valid": [valid_start, seg.valid[1]], "test": list(seg.test)},
    )
    with pytest.raises(ValueError, match=r"label reads 2 sessions ahead but only 0 session\(s\) lie between"):
        StormModel(**{**TRAINING, "run_dir": str(tmp_path / "run")}).fit(leaky)
    assert not (tmp_path / "run").exists()


def test_fit_refuses_processors_fitted_past_the_train_segment(provider):
    _, seg = provider
    handler = _handler(seg, fit_end=seg.valid[1])
    with pytest.raises(ValueError, match=r"RobustZScoreNorm is fitted up to fit_end_time .* after the train segment"):
        StormModel(**TRAINING).fit(DatasetH(handler, segments=seg.to_config()))


def test_members_are_the_single_runs_of_their_seeds_and_score_as_their_ensemble(dataset, tmp_path):
    short = {**TRAINING, "epochs": 1}
    members = StormModel(**{**short, "seed": 1, "members": 2, "run_dir": str(tmp_path / "run")}).fit(dataset)
    singles = [StormModel(**{**short, "seed": seed}).fit(dataset) for seed in (2, 3)]  # seed * members + k
    for member, single in zip(members.networks, singles, strict=True):
        for (name, a), b in zip(member.state_dict().items(), single.model.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.is_dir()) == ["member0", "member1"]

    pred = members.predict(dataset, "test")
    expected = ensemble_scores([s.predict(dataset, "test").to_frame() for s in singles])["score"]
    pd.testing.assert_series_equal(pred, expected, check_names=False)
    assert not pred.equals(singles[0].predict(dataset, "test"))
    assert members.model is members.networks[0]
    pd.testing.assert_series_equal(pickle.loads(pickle.dumps(members)).predict(dataset, "test"), pred)


def test_a_model_pickled_before_members_existed_still_predicts(fitted, dataset):
    state = {k: v for k, v in fitted.__dict__.items() if k not in ("members", "networks", "results")}
    state.update(model=fitted.model, result=fitted.result)
    old = StormModel.__new__(StormModel)
    old.__setstate__(state)
    assert old.members == 1 and old.result is fitted.result
    pd.testing.assert_series_equal(old.predict(dataset, "test"), fitted.predict(dataset, "test"))


def test_members_must_be_a_whole_number_of_at_least_one():
    with pytest.raises(ValueError, match=r"members must be a whole number of at least 1, got 0"):
        StormModel(**{**TRAINING, "members": 0})


def test_a_refit_trains_again_on_train_and_valid_for_the_epochs_chosen_on_valid(dataset, provider, tmp_path):
    _, seg = provider
    short = {**TRAINING, "epochs": 3, "patience": 3}
    chosen = StormModel(**short).fit(dataset)
    refit = StormModel(**{**short, "refit": True, "run_dir": str(tmp_path / "run")}).fit(dataset)
    assert refit.result.best_epoch == chosen.result.best_epoch  # the first fit is the plain one
    history = json.loads((tmp_path / "run" / "refit" / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, chosen.result.best_epoch + 1))
    trained_on = json.loads(torch.load(tmp_path / "run" / "refit" / "last.pt", weights_only=True)["fingerprint"])
    first, last, _ = trained_on["data"]["train"]
    valid_days = dataset.prepare("valid", col_set="label").index.get_level_values("datetime")
    assert (pd.Timestamp(first), pd.Timestamp(last)) == (seg.train[0], valid_days.max())  # valid learnt, test not
    pred, plain = refit.predict(dataset, "test"), chosen.predict(dataset, "test")
    assert pred.index.equals(plain.index) and not np.allclose(pred, plain)
    assert _test_rank_ic(refit, dataset) > 0.1


def test_refit_must_be_true_or_false():
    with pytest.raises(ValueError, match=r"refit must be true or false, got 'yes'"):
        StormModel(**{**TRAINING, "refit": "yes"})


def test_a_multi_day_target_trains_on_the_train_segment_and_still_validates_on_the_days_label(dataset, tmp_path):
    model = StormModel(**{**TRAINING, "epochs": 2, "target_days": 5, "run_dir": str(tmp_path / "run")}).fit(dataset)
    trained_on = json.loads(torch.load(tmp_path / "run" / "last.pt", weights_only=True)["fingerprint"])["data"]
    train_days = dataset.prepare("train", col_set="label").index.get_level_values("datetime").unique().sort_values()
    valid_days = dataset.prepare("valid", col_set="label").index.get_level_values("datetime").unique().sort_values()
    assert pd.Timestamp(trained_on["train"][1]) == train_days[-5]  # the last 4 days' 5-day means would read valid
    assert pd.Timestamp(trained_on["valid"][1]) == valid_days[-1]  # every valid day judged on its own label
    assert np.isfinite(model.result.history[-1]["valid_RankIC"])
    with pytest.raises(ValueError, match=r"target_days must be a whole number of at least 1, got True"):
        StormModel(**{**TRAINING, "target_days": True})


def test_lightgbm_refit_boosts_train_and_valid_for_the_rounds_chosen_on_valid(dataset, tmp_path):
    params = {"num_leaves": 8, "min_data_in_leaf": 20, "num_boost_round": 300, "early_stopping_rounds": 10}
    params |= {"num_threads": 1, "seed": 0, "verbosity": -1}
    with R.start(experiment_name="refit", uri=f"sqlite:///{tmp_path / 'mlruns.db'}"):
        plain, refit = LGBModel(**params), RefitLGBModel(**params)
        plain.fit(dataset)
        refit.fit(dataset)
    rounds = plain.model.best_iteration
    assert 0 < rounds < params["num_boost_round"]
    assert refit.model.num_trees() == rounds
    pred, label = refit.predict(dataset, "test"), dataset.prepare("test", col_set="label", data_key="raw").iloc[:, 0]
    assert not np.allclose(pred, plain.predict(dataset, "test"))
    assert rank_ic_summary(pred, label)["RankIC"] > 0.1
