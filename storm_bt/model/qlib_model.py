"""Window networks (STORM, FactorVAE, yours) as Qlib models: ``fit(dataset)`` on the train/valid
segments, ``predict`` a score Series.

The handler's frame (rows (datetime, instrument)) becomes a dense panel of windows: features
come from the inference view (``DK_I``) for fitting and predicting alike, so the model sees one
transform; labels come from the learning view (``DK_L``). Predicting a segment reads the
``window - 1`` sessions before it as history, never anything after a window's last date.
"""

from __future__ import annotations

import logging
from dataclasses import fields, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from qlib.data.dataset import DatasetH
from qlib.data.dataset.handler import DataHandlerLP
from qlib.model.base import Model
from qlib.workflow import R

from storm_bt.model.network import network_class
from storm_bt.model.storm import Storm
from storm_bt.model.trainer import TrainConfig, Trainer, TrainResult, predict_windows
from storm_bt.model.windows import Panel, WindowDataset, training_signature
from storm_bt.workflows.leakage import check_fit_dataset
from storm_bt.workflows.span import ensemble_scores

__all__ = ["StormModel", "WindowModel", "fit_panel"]

logger = logging.getLogger(__name__)


class WindowModel(Model):
    """Any :class:`~storm_bt.model.network.WindowNetwork` behind Qlib's ``Model`` interface, trained by
    the shared trainer (picklable; Qlib saves it with the run).

    :param network: the network class, named as Qlib names classes (``"pkg.module.Class"``, or
        ``{class: Class, module_path: pkg.module | path/to/file.py}``).
    :param network_config: options of ``network.configure`` (``n_stocks``/``n_features`` come from the data).
    :param run_dir: folder for checkpoints, per-epoch code usage and the training history; an
        interrupted fit resumes from it. ``None`` keeps everything in memory.
    :param members: networks trained from seeds ``seed * members + k`` (``k < members``); the score
        is the mean of their scores, each standardised across stocks per day. A single run's score
        moves with its seed about as much as between model variants, and the mean of several is
        steadier (issue 12's walk-forward); the cost is ``members`` trainings. Each member keeps its
        checkpoints in ``run_dir/member<k>``; factors are exported from member 0.
    :param refit: after the epoch is chosen on valid, train each network again from its seed on the
        train and valid segments together, for that many epochs of the same schedule, and score with
        those weights: the year nearest the test is then learnt from instead of only validated on
        (twice the training; the refit's checkpoints are in ``<run_dir>/refit``).
    :param target_days: train on the mean of the labels of this many consecutive days from each date
        on, each segment's own (see :meth:`WindowDataset.labelled`): a multi-day target with less of a
        day's noise. Epochs are still chosen on the valid days' own labels, the score that is judged.
    :param train_kwargs: fields of :class:`TrainConfig` (``epochs``, ``lr``, ``seed``, ...).
    """

    def __init__(
        self,
        network: str | dict[str, Any] | type,
        network_config: dict[str, Any] | None = None,
        run_dir: str | None = None,
        resume: bool = True,
        members: int = 1,
        refit: bool = False,
        target_days: int = 1,
        **train_kwargs: Any,
    ) -> None:
        if not isinstance(refit, bool):
            raise ValueError(f"{type(self).__name__}: refit must be true or false, got {refit!r}.")
        for name, count in (("members", members), ("target_days", target_days)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a whole number of at least 1, got {count!r}.")
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(train_kwargs) - known)
        if unknown:
            raise ValueError(
                f"Unknown training setting(s) {unknown} for {type(self).__name__}; TrainConfig's settings are "
                f"{sorted(known)}."
            )
        if "betas" in train_kwargs:
            train_kwargs["betas"] = tuple(train_kwargs["betas"])
        self.network = network_class(network)
        self.network_config = dict(network_config or {})
        self.network.configure(1, 1, **self.network_config)  # fail on bad keys now, not after loading data
        self.train_config = TrainConfig(**train_kwargs)
        self.run_dir = run_dir
        self.resume = resume
        self.members = members
        self.refit = refit
        self.target_days = target_days
        self.networks: list[torch.nn.Module] = []
        self.results: list[TrainResult] = []
        self.instruments: list[str] | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Runs saved before ``members`` existed hold their one network as ``model``, and before ``refit``
        existed did not refit, and before ``target_days`` trained on each day's label: still readable."""
        state = {"refit": False, "target_days": 1, **state}
        if "networks" in state:
            self.__dict__.update(state)
            return
        network, result = state.pop("model", None), state.pop("result", None)
        state["members"] = 1
        state["networks"] = [] if network is None else [network]
        state["results"] = [] if result is None else [result]
        self.__dict__.update(state)

    @property
    def model(self) -> torch.nn.Module | None:
        """The (first member's) trained network: the one factors are exported from."""
        return self.networks[0] if self.networks else None

    @property
    def result(self) -> TrainResult | None:
        return self.results[0] if self.results else None

    def member_seed(self, k: int) -> int:
        """The training seed of member ``k``: members of different run seeds never share one."""
        return self.train_config.seed * self.members + k

    def fit(self, dataset: DatasetH, evals_result: dict | None = None, reweighter: Any = None) -> WindowModel:
        if reweighter is not None:
            raise ValueError(f"{type(self).__name__} does not support sample reweighting.")
        panel, (train_start, train_end), (valid_start, valid_end) = fit_panel(dataset)
        cfg = self.network.configure(len(panel.instruments), panel.features.shape[2], **self.network_config)
        days = self.target_days
        train = WindowDataset.labelled(panel, cfg.window, train_start, train_end, days)
        valid = WindowDataset.labelled(panel, cfg.window, valid_start, valid_end)  # judged on the day's label
        logger.info(
            "%s: %d stocks x %d features, %d train and %d valid windows of %d days",
            self.network.__name__,
            len(panel.instruments),
            panel.features.shape[2],
            len(train),
            len(valid),
            cfg.window,
        )
        data_signature = training_signature(train, valid)
        both = WindowDataset.labelled(panel, cfg.window, train_start, valid_end, days) if self.refit else None
        both_signature = None if both is None else training_signature(both, None)
        self.networks, self.results = [], []
        for k in range(self.members):
            train_config = replace(self.train_config, seed=self.member_seed(k))
            run_dir = self.run_dir if self.members == 1 or self.run_dir is None else f"{self.run_dir}/member{k}"
            trainer = Trainer(cfg, train_config, run_dir, data_signature, network=self.network)
            network, result = trainer.fit(train, valid, resume=self.resume)
            if both is not None:
                refit_config = replace(train_config, stop_epoch=result.best_epoch)
                refit_dir = None if run_dir is None else f"{run_dir}/refit"
                refitter = Trainer(cfg, refit_config, refit_dir, both_signature, network=self.network)
                network, _ = refitter.fit(both, None, resume=self.resume)
            self.networks.append(network.cpu())
            self.results.append(result)
        self.instruments = list(panel.instruments)
        if evals_result is not None:
            evals_result["valid"] = [h["valid_RankIC"] for h in self.result.history]
        self._log_to_recorder()
        return self

    def _log_to_recorder(self) -> None:
        """Under ``qrun``: per-epoch losses and valid RankIC as metrics, history and code usage as artifacts."""
        experiment = R.exp_manager.active_experiment
        recorder = None if experiment is None else experiment.active_recorder
        if recorder is None or not self.results:
            return
        recorder.log_params(network=self.network.__name__)
        for k, result in enumerate(self.results):
            member = "" if self.members == 1 else f"member{k}."
            for record in result.history:
                metrics = {f"train.{member}{n}": float(v) for n, v in record.items() if n != "epoch" and np.isfinite(v)}
                recorder.log_metrics(step=record["epoch"], **metrics)
            recorder.log_params(**{f"{member}storm_best_epoch": result.best_epoch})
            recorder.save_objects(
                artifact_path="storm" if self.members == 1 else f"storm/member{k}",
                training_history=result.history,
                code_usage=result.code_usage,
            )

    def predict(self, dataset: DatasetH, segment: str | slice = "test") -> pd.Series:
        data = self.windows(dataset, segment)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        panel = data.panel
        index = pd.MultiIndex.from_product(
            [panel.dates[data.ends], panel.instruments], names=["datetime", "instrument"]
        )
        preds = []
        for network in self.networks:
            scores = predict_windows(network.to(device), data)
            network.cpu()
            preds.append(pd.Series(scores.ravel().astype(np.float64), index=index, name="score").dropna())
        if len(preds) == 1:
            return preds[0]
        return ensemble_scores([p.to_frame() for p in preds])["score"].dropna()

    def windows(self, dataset: DatasetH, segment: str | slice) -> WindowDataset:
        """The windows ending on each date of ``segment``, over the training universe, with their history."""
        if not self.networks or self.instruments is None:
            raise ValueError(f"{type(self).__name__} is not fitted: call fit(dataset) first.")
        start, end = _segment_range(dataset, segment)
        features = dataset.handler.fetch(
            slice(_history_start(start, self.model.window), end), col_set="feature", data_key=DataHandlerLP.DK_I
        )
        unknown = sorted(set(features.index.get_level_values("instrument")) - set(self.instruments))
        if unknown:
            logger.warning(
                "StormModel: %d instrument(s) not in the training universe get no score: %s", len(unknown), unknown[:10]
            )
        panel = Panel.from_frame(features, instruments=self.instruments)
        return WindowDataset(panel, self.model.window, panel.positions(start, end))


class StormModel(WindowModel):
    """The STORM factor model under Qlib: :class:`WindowModel` over :class:`Storm`, named by preset.

    :param preset: ``"small"`` or ``"paper"`` (see :data:`storm_bt.model.PRESETS`).
    :param ablation: optional ablation name (see :data:`storm_bt.model.ABLATIONS`).
    :param model_config: overrides of :class:`StormConfig` fields.
    The other parameters are :class:`WindowModel`'s.
    """

    network: type[torch.nn.Module] = Storm  # baselines sized by STORM's presets swap it (FactorVAEModel)

    def __init__(
        self,
        preset: str = "small",
        ablation: str | None = None,
        model_config: dict[str, Any] | None = None,
        run_dir: str | None = None,
        resume: bool = True,
        members: int = 1,
        refit: bool = False,
        target_days: int = 1,
        **train_kwargs: Any,
    ) -> None:
        self.preset = preset
        self.ablation = ablation
        options = {"preset": preset, "ablation": ablation, **(model_config or {})}
        super().__init__(type(self).network, options, run_dir, resume, members, refit, target_days, **train_kwargs)


def fit_panel(dataset: DatasetH) -> tuple[Panel, tuple[pd.Timestamp, pd.Timestamp], tuple[pd.Timestamp, pd.Timestamp]]:
    """What a fit reads, checked for leakage: the panel of features up to the valid segment's end
    (inference view) with train and valid labels (learning view), and the two segments' date ranges."""
    train_start, train_end = _segment_range(dataset, "train")
    valid_start, valid_end = _segment_range(dataset, "valid")
    if valid_start <= train_end:
        raise ValueError(f"valid segment starts ({valid_start.date()}) before train ends ({train_end.date()}).")
    check_fit_dataset(dataset, (train_start, train_end), valid_start)
    features = dataset.handler.fetch(slice(None, valid_end), col_set="feature", data_key=DataHandlerLP.DK_I)
    labels = pd.concat(dataset.prepare(["train", "valid"], col_set="label", data_key=DataHandlerLP.DK_L)).iloc[:, 0]
    return Panel.from_frame(features, labels), (train_start, train_end), (valid_start, valid_end)


def _segment_range(dataset: DatasetH, segment: str | slice) -> tuple[pd.Timestamp, pd.Timestamp]:
    if isinstance(segment, slice):
        bounds = (segment.start, segment.stop)
    elif segment in dataset.segments:
        bounds = dataset.segments[segment]
        bounds = (bounds.start, bounds.stop) if isinstance(bounds, slice) else tuple(bounds)
    else:
        raise ValueError(f"Unknown segment {segment!r}; the dataset has {sorted(dataset.segments)}.")
    if any(b is None for b in bounds):
        raise ValueError(f"Segment {segment!r} needs an explicit start and end, got {bounds}.")
    return pd.Timestamp(bounds[0]), pd.Timestamp(bounds[1])


def _history_start(start: pd.Timestamp, window: int) -> pd.Timestamp | None:
    """The session ``window - 1`` sessions before ``start`` (None when the calendar is shorter)."""
    from qlib.data import D

    if window <= 1:
        return start
    calendar = D.calendar(end_time=start, freq="day")
    calendar = calendar[calendar < start]
    return pd.Timestamp(calendar[-(window - 1)]) if len(calendar) >= window - 1 else None
