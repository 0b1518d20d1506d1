"""What a ``qrun`` run left behind: its workflow config and trained model, read back from mlflow.

A run folder is where ``qrun`` ran (the quickstart's run folder, for example): it holds
``mlruns.db`` and the artifacts. Qlib saves the workflow as ``config`` and the fitted model as
``params.pkl``; both are read with mlflow's client.

mlflow records absolute artifact paths. A copied or moved run folder would still point at the
folder it came from: a new run there would write its artifacts into the original, and reads would
need the original to exist. :func:`tracking_uri` points them at the folder itself first, so run
folders can be copied and moved safely; nothing else in the database changes.
"""

from __future__ import annotations

import os
import pickle
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import sqlalchemy
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

__all__ = ["QrunRun", "load_artifacts", "load_run", "tracking_uri"]

T = TypeVar("T")

# Every column in which mlflow's SQL store keeps an absolute artifact path (the table may be absent).
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
)
MLRUNS_ROOT = re.compile(r"^(.*/mlruns)/[^/]+$")  # <root>/mlruns/<experiment id>


@dataclass
class QrunRun:
    run_id: str
    config: dict[str, Any]  # the workflow as qrun ran it (BASE_CONFIG_PATH already merged)
    model: Any  # the fitted qlib Model


@contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No progress bar per artifact: reading a few pickles back is not a download worth showing."""
    variable = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name
    before = os.environ.get(variable)
    os.environ[variable] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(variable)
        else:
            os.environ[variable] = before


def tracking_uri(run_dir: str | Path) -> str:
    """The mlflow URI of ``run_dir/mlruns.db``, its artifact paths first pointed at ``run_dir/mlruns``
    if the folder was copied or moved (one SQLite transaction: all paths move or none)."""
    db = Path(run_dir).resolve() / "mlruns.db"
    if db.is_file():
        _readable(db, lambda: _relocate(db))
    return f"sqlite:///{db}"


def _relocate(db: Path) -> None:
    here = str(db.parent / "mlruns")
    with closing(sqlite3.connect(db)) as con, con:
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        locations = [loc for (loc,) in con.execute("SELECT artifact_location FROM experiments") if loc]
        roots = {m.group(1) for m in map(MLRUNS_ROOT.match, locations) if m}
        for old in roots:
            if old.removeprefix("file://") == here:
                continue
            for table, column in ARTIFACT_COLUMNS:
                if table in tables:
                    con.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?",
                        (here, len(old) + 1, len(old), old),
                    )


def load_artifacts(
    run_dir: str | Path, names: tuple[str, ...], run_id: str | None = None, experiment: str = "workflow"
) -> tuple[str, dict[str, Any]]:
    """Unpickled artifacts ``names`` of run ``run_id`` (default: the latest finished run) in ``run_dir/mlruns.db``."""
    db = Path(run_dir) / "mlruns.db"
    if not db.exists():
        raise FileNotFoundError(f"{db} not found: pass the folder qrun ran in (it holds mlruns.db).")
    uri = tracking_uri(run_dir)
    client = _readable(db, lambda: mlflow.MlflowClient(tracking_uri=uri))
    if run_id is None:
        exp = _readable(db, lambda: client.get_experiment_by_name(experiment))
        if exp is None:
            raise LookupError(f"{db}: no experiment {experiment!r}.")
        finished = "attributes.status = 'FINISHED'"
        runs = client.search_runs([exp.experiment_id], finished, order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            raise LookupError(f"{db}: experiment {experiment!r} has no finished run.")
        run_id = runs[0].info.run_id
    with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
        objects = {}
        for name in names:
            try:
                path = client.download_artifacts(run_id, name, tmp)
            except mlflow.exceptions.MlflowException as exc:
                raise LookupError(f"{db}: run {run_id} has no artifact {name!r} (was it a qrun run?).") from exc
            with open(path, "rb") as fh:
                objects[name] = pickle.load(fh)
    return run_id, objects


def _readable(db: Path, read: Callable[[], T]) -> T:
    """``read()`` of the tracking database ``db``; a damaged file is an error that names it, not a traceback."""
    try:
        return read()
    except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, mlflow.exceptions.MlflowException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{db}: not a readable mlflow tracking database ({first}). It may be truncated or overwritten; "
            "it was left as it is: rerun the workflow in a fresh folder."
        ) from None


def load_run(run_dir: str | Path, run_id: str | None = None, experiment: str = "workflow") -> QrunRun:
    """The workflow config and fitted model of a qrun run (see :func:`load_artifacts`)."""
    run_id, objects = load_artifacts(run_dir, ("config", "params.pkl"), run_id, experiment)
    return QrunRun(run_id, objects["config"], objects["params.pkl"])
