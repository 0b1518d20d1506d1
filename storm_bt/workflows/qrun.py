"""Run Qlib ``qrun`` workflows: point a workflow YAML at another provider and dates, run it, read its metrics.

The YAMLs in ``experiments/`` are plain Qlib workflows. To run one on another market (the
synthetic market of the quickstart, a longer history) only the provider path, the market, the
benchmark and the dates change; :func:`retarget` does exactly that and nothing else.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from qlib.utils.data import update_config
from ruamel.yaml import YAML

from storm_bt.data.calendar import nyse_sessions
from storm_bt.data.provider import read_calendar
from storm_bt.handlers.alpha158_us import label_horizon
from storm_bt.io import atomic_write_text, exclusive, machine, read_yaml
from storm_bt.model.trainer import BEST, HISTORY
from storm_bt.workflows.failure import QrunError, final_error
from storm_bt.workflows.progress import EpochFollower, history_path
from storm_bt.workflows.runs import tracking_uri
from storm_bt.workflows.segments import Segments

__all__ = [
    "CHECKPOINTS",
    "check_workflow_split",
    "handler_kwargs",
    "kept_valid_rank_ic",
    "latest_metrics",
    "load_workflow",
    "port_analysis_configs",
    "provider_path",
    "qrun_finished",
    "qrun_machine",
    "qrun_wall",
    "retarget",
    "run_qrun",
    "run_qrun_once",
    "run_workflow",
    "workflow_segments",
    "write_workflow",
]

log = logging.getLogger(__name__)

DONE_MARKER = "qrun.done"  # in a run folder: qrun finished there; holds the wall seconds and the machine
CHECKPOINTS = "checkpoints"  # in a run folder: a storm_bt model's checkpoints and training history


def load_workflow(path: str | Path) -> dict[str, Any]:
    """Load a workflow YAML as Qlib's ``qrun`` does: safe loader, then ``BASE_CONFIG_PATH`` merged under it.

    The base path is looked up as qrun does: as given (from the working directory), then beside ``path``.
    """
    path = Path(path)
    config = read_yaml(path)
    base = config.pop("BASE_CONFIG_PATH", None)
    if base is None:
        return config
    candidates = [Path(base), path.parent / base]
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        looked = [str(c) for c in candidates]
        raise FileNotFoundError(f"{path}: BASE_CONFIG_PATH {base!r} not found (looked at {looked}).")
    return update_config(load_workflow(found), config)


def handler_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """The data handler's arguments (instruments, dates, label) of a workflow config."""
    return config["task"]["dataset"]["kwargs"]["handler"]["kwargs"]


def port_analysis_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``{strategy, backtest}`` config of every ``PortAnaRecord`` of a workflow config."""
    return [r["kwargs"]["config"] for r in config["task"].get("record", []) if r["class"] == "PortAnaRecord"]


def provider_path(config: dict[str, Any]) -> Path:
    """The Qlib provider a workflow config reads; an error naming it and how to build it if it is missing."""
    provider = Path(str(config["qlib_init"]["provider_uri"])).expanduser()
    if not (provider / "calendars").is_dir():
        raise FileNotFoundError(
            f"The Qlib provider {provider} does not exist; build it with "
            f"`storm-bt data ingest --csv-dir <CSV folder> --qlib-dir {provider}`."
        )
    return provider


def workflow_segments(config: dict[str, Any]) -> Segments:
    """The train/valid/test segments of a workflow config."""
    return Segments.from_config(config["task"]["dataset"]["kwargs"]["segments"])


def retarget(
    config: dict[str, Any], provider_uri: str | Path, market: str, benchmark: str, segments: Segments
) -> dict[str, Any]:
    """A copy of ``config`` reading ``provider_uri`` with ``market``/``benchmark`` over ``segments``.

    Data are loaded from the train start to the test end; processors are fit on train only; the
    backtest covers the test segment up to the session before its end (Qlib's exchange reads
    the session after the last trading day).
    """
    out = copy.deepcopy(config)
    out["qlib_init"]["provider_uri"] = str(provider_uri)
    fmt = "%Y-%m-%d"
    handler = handler_kwargs(out)
    handler.update(
        instruments=market,
        start_time=f"{segments.train[0]:{fmt}}",
        end_time=f"{segments.test[1]:{fmt}}",
        fit_start_time=f"{segments.train[0]:{fmt}}",
        fit_end_time=f"{segments.train[1]:{fmt}}",
    )
    out["task"]["dataset"]["kwargs"]["segments"] = segments.to_config()
    test_sessions = nyse_sessions(*segments.test)
    for backtest in (c["backtest"] for c in port_analysis_configs(out)):
        backtest.update(
            start_time=f"{test_sessions[0]:{fmt}}", end_time=f"{test_sessions[-2]:{fmt}}", benchmark=benchmark
        )
    for key, value in (("market", market), ("benchmark", benchmark)):
        if key in out:
            out[key] = value
    return out


def check_workflow_split(config: dict[str, Any]) -> None:
    """Raise unless the workflow's segments lie in its provider's calendar, in order, and at least the
    label's horizon apart (no train label reads a valid or test price)."""
    label = handler_kwargs(config).get("label", "qlib")
    workflow_segments(config).check(read_calendar(provider_path(config)), embargo=label_horizon(label))


def write_workflow(config: dict[str, Any], path: str | Path) -> Path:
    """Write ``config`` as a YAML that ``qrun`` reads."""
    buffer = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(config, buffer)
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def run_qrun(
    workflow_path: str | Path, cwd: str | Path, log_path: str | Path, progress: Callable[[str], None] | None = None
) -> None:
    """Run ``qrun`` on ``workflow_path`` in ``cwd`` (where its ``mlruns.db`` lands), logging to ``log_path``.

    Each training epoch the run finishes (a record of its model's training history) is passed to
    ``progress`` as one line, so a long qrun is not silent.
    """
    tracking_uri(cwd)  # a copied run folder records its artifacts in itself, not in the original
    cmd = [sys.executable, "-m", "qlib.cli.run", str(Path(workflow_path).resolve())]
    env = os.environ | {"TQDM_MININTERVAL": "5", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    history = history_path(load_workflow(workflow_path), cwd) if progress is not None else None
    with (
        open(log_path, "wb") as fh,
        EpochFollower(history, progress or (lambda line: None)),
    ):
        returncode = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False).returncode
    if returncode != 0:
        raise QrunError(f"qrun failed (exit code {returncode}): {final_error(log_path)} Full log: {log_path}")


def qrun_finished(run_dir: str | Path) -> bool:
    """Whether ``qrun`` finished in ``run_dir`` (a run interrupted before the end is not finished)."""
    return (Path(run_dir) / DONE_MARKER).is_file()


def run_qrun_once(
    workflow_path: str | Path, run_dir: str | Path, progress: Callable[[str], None] | None = None
) -> float:
    """Run ``qrun`` in ``run_dir`` unless a finished run is there; the wall seconds of the run that finished.

    ``run_dir/qrun.done`` marks a finished run (written only after qrun succeeded) and holds its
    wall time and the machine it ran on; a run interrupted before that is run again (STORM resumes
    from its checkpoint).
    """
    run_dir = Path(run_dir)
    done = run_dir / DONE_MARKER
    if not qrun_finished(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        run_qrun(workflow_path, cwd=run_dir, log_path=run_dir / "qrun.log", progress=progress)
        record = {"wall_s": round(time.perf_counter() - start, 1), "machine": machine()}
        atomic_write_text(done, json.dumps(record) + "\n")
    return qrun_wall(run_dir)


def _done_record(run_dir: str | Path) -> dict[str, Any]:
    """``qrun.done`` of a finished run: a JSON record, or from runs before it named their machine, the
    wall seconds alone (or nothing)."""
    text = (Path(run_dir) / DONE_MARKER).read_text().strip()
    return json.loads(text) if text.startswith("{") else {"wall_s": float(text or "nan")}


def qrun_wall(run_dir: str | Path) -> float:
    """The wall seconds of the finished qrun run in ``run_dir`` (NaN for runs that did not record it)."""
    return float(_done_record(run_dir)["wall_s"])


def qrun_machine(run_dir: str | Path) -> dict[str, str] | None:
    """The machine (:func:`storm_bt.io.machine`) the finished run in ``run_dir`` trained on; None for runs
    finished before runs recorded it."""
    return _done_record(run_dir).get("machine")


def kept_valid_rank_ic(run_dir: str | Path) -> float:
    """The valid RankIC of the epoch whose weights a storm_bt model kept (``best.pt``): the best epoch's
    under selection, the last one's without it; for a model of several members, their mean (NaN for
    models without a training history)."""
    checkpoints = Path(run_dir) / CHECKPOINTS
    members = sorted(checkpoints.glob("member*"))
    if members:
        kept = [_kept_valid_rank_ic(member) for member in members]
        return sum(kept) / len(kept)
    return _kept_valid_rank_ic(checkpoints)


def _kept_valid_rank_ic(checkpoints: Path) -> float:
    if not (checkpoints / HISTORY).is_file() or not (checkpoints / BEST).is_file():
        return math.nan
    kept = torch.load(checkpoints / BEST, map_location="cpu", weights_only=True, mmap=True)["epoch"]
    history = json.loads((checkpoints / HISTORY).read_text())
    return next((record["valid_RankIC"] for record in history if record["epoch"] == kept), math.nan)


def run_workflow(config: dict[str, Any], run_dir: str | Path) -> float:
    """Run ``config`` through qrun in ``run_dir`` unless a finished run is there; the wall seconds of the
    run that finished. Holds the folder's lock, so two evaluations never run into one folder at once.

    A model with a ``run_dir`` argument keeps its checkpoints in ``run_dir/checkpoints``: an
    interrupted run resumes from them.
    """
    run_dir = Path(run_dir)
    with exclusive(run_dir, "qrun run folder"):
        if not qrun_finished(run_dir):
            config = copy.deepcopy(config)
            kwargs = config["task"]["model"]["kwargs"]
            if "run_dir" in kwargs:
                kwargs["run_dir"] = CHECKPOINTS  # qrun runs in run_dir: the folder stays movable
            write_workflow(config, run_dir / "workflow.yaml")
        return run_qrun_once(run_dir / "workflow.yaml", run_dir)


def latest_metrics(run_dir: str | Path, experiment: str = "workflow") -> pd.Series:
    """Metrics logged by the latest run of ``experiment`` in ``run_dir`` (IC, Rank IC, portfolio analysis...)."""
    uri = tracking_uri(run_dir)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"No experiment {experiment!r} in {uri}.")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise LookupError(f"Experiment {experiment!r} in {uri} has no runs.")
    return pd.Series(runs[0].data.metrics, dtype=float).sort_index()
