"""One out-of-sample history from the folds of a walk-forward evaluation, analysed like a qrun run.

Each fold's run predicted only its own test period; their ``pred.pkl`` are concatenated in date
order (test periods may neither overlap nor leave a gap between folds) and the analysis records
of the protocol (``SigAnaRecord``, ``PortAnaRecord``, ``PaperMetricsRecord``) run once over the whole
span, in an mlflow store of the span's own folder: ``storm-bt report`` reads it like any run.
A seed ensemble is the same span of the mean of the seeds' cross-sectionally standardised scores.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from storm_bt.io import atomic_write_text, exclusive
from storm_bt.workflows.runs import load_artifacts

__all__ = ["SPAN_DONE", "analyse_span", "ensemble_scores", "span_finished", "span_runs", "stitch_predictions"]

SPAN_DONE = "span.done"  # written last: a span folder without it is rebuilt from nothing


def stitch_predictions(fold_runs: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The folds' test predictions and labels, concatenated in date order, checked to be disjoint."""
    preds, labels = [], []
    for run in fold_runs:
        _, art = load_artifacts(run, ("pred.pkl", "label.pkl"))
        preds.append(art["pred.pkl"])
        labels.append(art["label.pkl"])
    for (earlier, run), later in zip(zip(preds, fold_runs, strict=True), preds[1:], strict=False):
        last, first = earlier.index.get_level_values("datetime").max(), later.index.get_level_values("datetime").min()
        if first <= last:
            raise ValueError(
                f"{run}: its test predictions end on {last.date()}, after the next fold's start {first.date()}."
            )
    return pd.concat(preds).sort_index(), pd.concat(labels).sort_index()


def ensemble_scores(preds: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The mean of the seeds' scores, each standardised across stocks on every day (so no seed dominates)."""
    standardised = []
    for pred in preds:
        score = pred["score"]
        by_day = score.groupby(level="datetime")
        standardised.append((score - by_day.transform("mean")) / by_day.transform("std", ddof=0))
    return pd.concat(standardised, axis=1).mean(axis=1).to_frame("score")


def span_finished(span_dir: str | Path) -> bool:
    return (Path(span_dir) / SPAN_DONE).is_file()


def span_runs(span_dir: str | Path) -> list[list[Path]]:
    """The fold runs a finished span was stitched from: per seed, in date order.

    The record holds them relative to the span folder, so an evaluation folder can be moved or copied
    whole; a record written before that (lines of paths, relative to the folder the evaluation ran in)
    is read as it was written.
    """
    span = Path(span_dir)
    text = (span / SPAN_DONE).read_text()
    try:
        recorded = json.loads(text)
    except json.JSONDecodeError:
        return [[Path(run) for run in line.split()] for line in text.splitlines() if line.strip()]
    return [[span / run for run in runs] for runs in recorded["runs"]]


def analyse_span(
    seeds_fold_runs: Sequence[Sequence[str]],
    span_dir: str,
    qlib_init: dict[str, Any],
    records: Sequence[dict[str, Any]],
) -> str:
    """Stitch the folds of each seed (several seeds: their ensemble) and run ``records`` over the span.

    :param seeds_fold_runs: for each seed, its fold run folders in date order.
    :param records: the protocol's analysis record configs (``SigAnaRecord``, ``PortAnaRecord`` with
        the backtest over the span, ...), run in order on one recorder holding the stitched
        ``pred.pkl`` and ``label.pkl``.
    Runs in a worker process: it initialises Qlib and changes into ``span_dir``.
    """
    import qlib  # a fresh worker initialises Qlib for this span's store only
    from qlib.utils import init_instance_by_config
    from qlib.workflow import R

    span = Path(span_dir).resolve()  # absolute: the marker is written after the chdir below
    relative = [[os.path.relpath(Path(run).resolve(), span) for run in runs] for runs in seeds_fold_runs]
    with exclusive(span, "walk-forward span"):
        if span_finished(span):
            return span_dir
        shutil.rmtree(span, ignore_errors=True)  # anything here is half-written
        span.mkdir(parents=True)
        stitched = [stitch_predictions(runs) for runs in seeds_fold_runs]
        pred = stitched[0][0] if len(stitched) == 1 else ensemble_scores([p for p, _ in stitched])
        label = stitched[0][1]
        os.chdir(span)  # mlflow writes its artifacts beside the store, as in a qrun folder
        qlib.init(
            provider_uri=str(Path(str(qlib_init["provider_uri"])).expanduser()),
            region=qlib_init.get("region", "us"),
            kernels=1,
            exp_manager={
                "class": "MLflowExpManager",
                "module_path": "qlib.workflow.expm",
                "kwargs": {"uri": "sqlite:///mlruns.db", "default_exp_name": "workflow"},
            },
        )
        with R.start(experiment_name="workflow"):
            recorder = R.get_recorder()
            recorder.save_objects(**{"pred.pkl": pred, "label.pkl": label})
            R.log_params(folds=len(seeds_fold_runs[0]), seeds=len(seeds_fold_runs))
            for record in records:
                init_instance_by_config(record, recorder=recorder).generate()
        atomic_write_text(span / SPAN_DONE, json.dumps({"runs": relative}, indent=1) + "\n")
    return span_dir
