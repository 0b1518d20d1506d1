"""``storm-bt factors export``: a qrun run's trained STORM -> a factor store over its data range."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from storm_bt.factors.store import write_factor_store
from storm_bt.io import package_versions
from storm_bt.model import StormModel
from storm_bt.workflows.prepared import dataset_config_in
from storm_bt.workflows.runs import load_run

__all__ = ["export_run_factors"]

log = logging.getLogger(__name__)


def export_run_factors(
    run_dir: str | Path, out: str | Path, run_id: str | None = None, start: str | None = None, end: str | None = None
) -> Path:
    """Embed every date in [start, end] (default: the handler's whole data range) with the run's model; the run may
    be a walk-forward evaluation's, whose handler is a prepared pickle."""
    import qlib
    from qlib.utils import init_instance_by_config

    run = load_run(run_dir, run_id)
    if not isinstance(run.model, StormModel) or run.model.model is None:
        raise ValueError(f"Run {run.run_id} in {run_dir} did not train a StormModel ({type(run.model).__name__}).")
    qlib.init(**{k: v for k, v in run.config["qlib_init"].items() if k != "exp_manager"})
    dataset = init_instance_by_config(dataset_config_in(run.config, run_dir))
    first = pd.Timestamp(start or dataset.handler.start_time)
    last = pd.Timestamp(end or dataset.handler.end_time)
    data = run.model.windows(dataset, slice(first, last))
    dates = data.panel.dates[data.ends]
    log.info(
        "Exporting %d dates (%s .. %s) x %d stocks to %s",
        len(data),
        dates[0].date(),
        dates[-1].date(),
        len(data.panel.instruments),
        out,
    )
    attrs = {
        "model_config": asdict(run.model.model.cfg),
        "network": type(run.model.model).__name__,
        "preset": run.model.preset,
        "ablation": run.model.ablation or "",
        "seed": run.model.member_seed(0),  # the exported network's
        "members": run.model.members,
        "data_start": f"{dates[0]:%Y-%m-%d}",
        "data_end": f"{dates[-1]:%Y-%m-%d}",
        "segments": run.config["task"]["dataset"]["kwargs"]["segments"],
        "provider_uri": str(run.config["qlib_init"]["provider_uri"]),
        "source_run": f"{Path(run_dir).resolve()}#{run.run_id}",
        "versions": package_versions(),
    }
    return write_factor_store(run.model.model, data, out, attrs)
