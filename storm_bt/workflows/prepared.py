"""Processed data handlers built once and shared by every run that asks for the same data.

A walk-forward evaluation runs several models and seeds on each fold; they all read the same
Alpha158 frame, fit on the same train segment. Building it (Qlib's expression engine, then the
processors; about 11 s per DJ30 fold) is done once: the handler is pickled with its data, as Qlib's
own rolling examples do, under a key made of the provider's content digest and the handler's
configuration, and each run's workflow points ``handler`` at the file (``file://``, which Qlib's
``init_instance_by_config`` unpickles). The pickle is written atomically under a lock, so a
killed build leaves nothing that a later run could take for finished.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from storm_bt.io import atomic_path, exclusive

__all__ = [
    "dataset_config_in",
    "handler_config",
    "handler_key",
    "panel_key",
    "prepare_handler",
    "prepare_panel",
    "with_prepared_handler",
]

log = logging.getLogger(__name__)


def handler_config(config: dict[str, Any]) -> dict[str, Any]:
    """The ``{class, module_path, kwargs}`` of a workflow's data handler."""
    handler = config["task"]["dataset"]["kwargs"]["handler"]
    if not isinstance(handler, dict):
        raise ValueError(f"The workflow's handler is {handler!r}, not a handler config to prepare.")
    return handler


def handler_key(config: dict[str, Any], provider_sha: str) -> str:
    """The cache key of a workflow's processed handler: provider content, region and handler config."""
    what = {"provider": provider_sha, "region": config["qlib_init"].get("region"), "handler": handler_config(config)}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_handler(config: dict[str, Any], target: str) -> str:
    """Build the workflow's handler and pickle it, with its data, to ``target`` (unless it is there).

    Runs in a worker process: it initialises Qlib on the workflow's provider.
    """
    from qlib.utils import init_instance_by_config

    def write(tmp: Path) -> None:
        init_instance_by_config(copy.deepcopy(handler_config(config))).to_pickle(tmp, dump_all=True)

    _build_once(config, Path(target), "prepared handler", write, kernels=1)
    return target


def panel_key(config: dict[str, Any], provider_sha: str) -> str:
    """The cache key of a workflow's fit panel: its handler's key and the train and valid segments."""
    segments = config["task"]["dataset"]["kwargs"]["segments"]
    what = {"handler": handler_key(config, provider_sha), "segments": [segments["train"], segments["valid"]]}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_panel(config: dict[str, Any], target: str | Path) -> Path:
    """Build what a fit of the workflow reads (:func:`storm_bt.model.qlib_model.fit_panel`: features
    to the valid segment's end, train and valid labels) and save it to ``target`` (``.npz``), unless
    it is there. Training then needs no Qlib (``experiments/train_storm.py``)."""
    from qlib.utils import init_instance_by_config

    from storm_bt.model.qlib_model import fit_panel

    def write(tmp: Path) -> None:
        panel, _, _ = fit_panel(init_instance_by_config(copy.deepcopy(config["task"]["dataset"])))
        panel.save(tmp)

    _build_once(config, Path(target), "prepared panel", write)
    return Path(target)


def _build_once(config: dict[str, Any], target: Path, what: str, write: Callable[[Path], None], **init: Any) -> None:
    """Under ``target``'s lock and unless it exists: Qlib initialised on the workflow's provider
    (``init``: more of ``qlib.init``'s arguments), then ``write(tmp)``, moved to ``target`` atomically."""
    import qlib  # a fresh worker initialises Qlib for this provider only

    with exclusive(target, what):
        if target.is_file():
            return
        provider = str(Path(str(config["qlib_init"]["provider_uri"])).expanduser())
        qlib.init(provider_uri=provider, region=config["qlib_init"].get("region", "us"), **init)
        with atomic_path(target) as tmp:
            write(tmp)
    log.info("prepared %s", target)


def with_prepared_handler(config: dict[str, Any], prepared: Path, run_dir: Path) -> dict[str, Any]:
    """A copy of ``config`` whose handler is the pickle ``prepared``, named relative to ``run_dir``
    (where qrun runs), so that an evaluation folder can be moved as a whole."""
    out = copy.deepcopy(config)
    out["task"]["dataset"]["kwargs"]["handler"] = "file://" + os.path.relpath(prepared, run_dir)
    return out


def dataset_config_in(config: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """The workflow's dataset config as qrun built it in ``run_dir``: a prepared handler's relative
    ``file://`` path is made absolute, so the dataset can be rebuilt from any working folder."""
    dataset = copy.deepcopy(config["task"]["dataset"])
    handler = dataset["kwargs"]["handler"]
    if isinstance(handler, str) and handler.startswith("file://"):
        path = Path(handler.removeprefix("file://"))
        if not path.is_absolute():
            dataset["kwargs"]["handler"] = "file://" + str((Path(run_dir) / path).resolve())
    return dataset
