"""The ``storm-bt evaluate`` config, and the workflows it turns into: one per model, seed (and fold).

The YAML names the models (Qlib workflows: STORM and the baselines), the ablations (more
workflows), the seeds, optionally the data to run them all on (provider, universe, benchmark and
dates; by default each workflow's own), optionally a ``rolling:`` block (walk-forward folds, see
:mod:`storm_bt.workflows.rolling`) with the ``baseline`` every model is tested against and
``selections`` chosen among per fold, on its valid segment or on the earlier folds' out-of-sample
record (:mod:`storm_bt.pipelines.selection`), and
optionally a trading experiment whose agents read the factors of the first seed of one STORM run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
from qlib.utils.data import update_config

from storm_bt.data.provider import read_calendar
from storm_bt.handlers.alpha158_us import LABELS, label_horizon
from storm_bt.io import check_keys, config_from_yaml, package_versions
from storm_bt.workflows.qrun import (
    handler_kwargs,
    load_workflow,
    port_analysis_configs,
    provider_path,
    qrun_finished,
    retarget,
    workflow_segments,
)
from storm_bt.workflows.records import is_signal_record
from storm_bt.workflows.rolling import RollingSpec
from storm_bt.workflows.segments import Segments

__all__ = [
    "SELECTION_RULES",
    "EvalConfig",
    "ModelEntry",
    "Selection",
    "describe",
    "described_lines",
    "model_workflow",
    "run_folder",
    "run_plan",
    "slug",
    "subset_folder",
    "workflow_on_data",
]

log = logging.getLogger(__name__)


def slug(name: str) -> str:
    """A row's folder name under ``runs/`` and ``spans/``: its name lower-cased, runs of other characters as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


SUBSET_NAME_CHARS = 120
"""The longest readable subset folder name; a longer one is cut and keyed by a digest of the whole
(file systems refuse names over 255 bytes, and ``--models`` may list a whole search)."""


def subset_folder(flags: dict[str, str | None]) -> str:
    """The folder under ``subsets/`` of a screening run: the flags that narrow the config, readable,
    e.g. ``models-LightGBM_folds-1``; cut to SUBSET_NAME_CHARS and keyed by a digest when longer."""
    name = re.sub(r"[^A-Za-z0-9,-]+", "_", "_".join(f"{flag}-{value}" for flag, value in flags.items() if value))
    if len(name) <= SUBSET_NAME_CHARS:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: SUBSET_NAME_CHARS - len(digest) - 1]}_{digest}"


@dataclass(frozen=True)
class ModelEntry:
    """One row of a table: a workflow, model kwargs that override the workflow's, and the universe
    its predictions are judged on when the workflow trains on a wider one (see ``UniverseSignalRecord``)."""

    name: str
    workflow: Path
    kwargs: dict[str, Any] = field(default_factory=dict)
    score_universe: str | None = None

    @property
    def slug(self) -> str:
        return slug(self.name)


SELECTION_RULES = ("valid", "past_folds")
"""What a selection chooses on: each candidate run's valid Rank IC, or the candidate's Rank IC over
the test periods of the earlier folds (see :mod:`storm_bt.pipelines.selection`)."""


@dataclass(frozen=True)
class Selection:
    """A row stitched per seed and fold from one of ``candidates``, chosen by ``rule``."""

    candidates: list[str]
    rule: str = "valid"

    def __post_init__(self) -> None:
        if self.rule not in SELECTION_RULES:
            raise ValueError(f"rule must be one of {list(SELECTION_RULES)}, got {self.rule!r}.")


@dataclass(frozen=True)
class EvalConfig:
    """Models, ablations, seeds, the data they run on, the walk-forward folds, the trading experiment."""

    models: list[ModelEntry]
    seeds: list[int]
    ablations: list[ModelEntry] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # provider_uri, market, benchmark, segments | fractions
    rolling: RollingSpec | None = None
    baseline: str | None = None  # the model every other is tested against; default: the first baseline
    trading: dict[str, str] | None = None  # {config: TRADING.yaml, factors_from: MODEL NAME}
    selections: dict[str, Selection] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.models or not self.seeds:
            raise ValueError("An evaluation needs at least one model and one seed.")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be distinct whole numbers from 0, got {self.seeds}.")
        names = [m.name for m in self.entries]
        if len(set(names)) != len(names) or len({m.slug for m in self.entries}) != len(names):
            raise ValueError(f"Model and ablation names must be unique (also once lower-cased); got {names}.")
        if with_comma := [name for name in [*names, *self.selections] if "," in name]:
            raise ValueError(f"Names may not contain ',' (--models separates names by commas): {with_comma}.")
        check_keys(self.data, {"provider_uri", "market", "benchmark", "segments", "fractions"}, where="data")
        if "segments" in self.data and "fractions" in self.data:
            raise ValueError("data: give segments or fractions, not both.")
        if self.baseline is not None and self.baseline not in [m.name for m in self.entries]:
            raise ValueError(
                f"baseline {self.baseline!r} is not one of the models or ablations {[m.name for m in self.entries]}."
            )
        if self.rolling is not None:
            if {"segments", "fractions"} & set(self.data):
                raise ValueError(
                    "data.segments / data.fractions and rolling: exclude each other (folds set the dates)."
                )
            if self.trading is not None:
                raise ValueError("trading: runs on one split; drop it from a rolling: evaluation.")
        self._check_selections()
        if self.trading is not None:
            check_keys(self.trading, {"config", "factors_from"}, required={"config"}, where="trading")
            source = self.trading.get("factors_from", self.models[0].name)
            if source not in [m.name for m in self.models]:
                raise ValueError(f"trading.factors_from {source!r} is not one of the models.")

    def _check_selections(self) -> None:
        if self.selections and self.rolling is None:
            raise ValueError("selections: choose a candidate per fold; they need a rolling: block.")
        names = [m.name for m in self.entries]
        slugs = {m.slug for m in self.entries}
        for name, selection in self.selections.items():
            candidates = selection.candidates
            if name in names or slug(name) in slugs:
                raise ValueError(f"selections: {name!r} is already the name of a model or ablation.")
            if len(candidates) < 2 or len(set(candidates)) != len(candidates):
                raise ValueError(f"selections: {name!r} needs at least two distinct candidates, got {candidates}.")
            unknown = [c for c in candidates if c not in names]
            if unknown:
                raise ValueError(f"selections: {name!r} names {unknown}, not among the models and ablations {names}.")

    @property
    def entries(self) -> list[ModelEntry]:
        return [*self.models, *self.ablations]

    @property
    def baseline_name(self) -> str:
        """The named baseline, else the first model after the one under study (or that one, alone)."""
        return self.baseline or self.models[min(1, len(self.models) - 1)].name

    def subset(
        self, models: list[str] | None = None, seeds: list[int] | None = None, baseline: str | None = None
    ) -> EvalConfig:
        """The same evaluation on some of its models (and ablations), on other ``seeds`` (fewer to
        screen, more to confirm: a seed's runs are the same whichever list names it), or compared
        against another ``baseline`` (any model or ablation that is kept). A selection named in
        ``models`` brings its candidates along."""
        known = [m.name for m in self.entries]
        for name in models or []:
            if name not in known and name not in self.selections:
                raise ValueError(f"--models: {name!r} is not in the config; it has {known + list(self.selections)}.")
        selections = {k: v for k, v in self.selections.items() if models is None or k in models}
        keep = set(models or known) - set(self.selections) | {c for v in selections.values() for c in v.candidates}
        kept = [m for m in self.models if m.name in keep]
        if not kept:
            raise ValueError("--models: keep at least one of the models (not only ablations).")
        if baseline is not None and baseline not in keep:
            raise ValueError(f"--baseline: {baseline!r} is not among the models run: {sorted(keep)}.")
        baseline = baseline or (self.baseline if self.baseline in keep else None)
        trading = self.trading
        if trading is not None and trading.get("factors_from", self.models[0].name) not in keep:
            log.warning("trading: skipped, its factors come from a model that is not run (%s)", sorted(keep))
            trading = None
        return replace(
            self,
            models=kept,
            ablations=[m for m in self.ablations if m.name in keep],
            seeds=list(seeds or self.seeds),
            baseline=baseline,
            trading=trading,
            selections=selections,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> EvalConfig:
        """Read a config; workflow and trading paths are relative to the config's folder."""
        path = Path(path)
        return config_from_yaml(path, lambda raw: cls.from_dict(raw, base=path.parent))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base: Path = Path(".")) -> EvalConfig:
        check_keys(raw, {f.name for f in fields(cls)}, required={"models"})

        def entries(block: dict[str, Any] | None) -> list[ModelEntry]:
            out = []
            for name, spec in (block or {}).items():
                spec = {"workflow": spec} if isinstance(spec, str) else dict(spec)
                check_keys(spec, {"workflow", "kwargs", "score_universe"}, required={"workflow"}, where=str(name))
                workflow = (base / spec["workflow"]).resolve()
                if not workflow.is_file():
                    raise ValueError(f"{name}: workflow {workflow} not found.")
                universe = spec.get("score_universe")
                if universe is not None and (not isinstance(universe, str) or not universe):
                    raise ValueError(f"{name}: score_universe must name a universe of the provider, got {universe!r}.")
                out.append(ModelEntry(str(name), workflow, dict(spec.get("kwargs") or {}), universe))
            return out

        seeds = raw.get("seeds", [0, 1, 2])
        if not isinstance(seeds, list) or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
            raise ValueError(f"seeds must be a list of whole numbers, got {seeds!r}.")
        trading = dict(raw["trading"]) if raw.get("trading") else None
        if trading and "config" in trading:
            trading["config"] = str((base / trading["config"]).resolve())
        return cls(
            models=entries(raw.get("models")),
            ablations=entries(raw.get("ablations")),
            seeds=list(seeds),
            data=dict(raw.get("data") or {}),
            rolling=RollingSpec.from_dict(raw["rolling"]) if raw.get("rolling") else None,
            baseline=None if raw.get("baseline") is None else str(raw["baseline"]),
            trading=trading,
            selections=_selections(raw.get("selections")),
        )


def _selections(raw: Any) -> dict[str, Selection]:
    """``name: [candidates]`` (chosen on valid) or ``name: {candidates: [...], rule: past_folds}``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"selections must map a name to a list of candidate model names, got {raw!r}.")
    out = {}
    for name, spec in raw.items():
        spec = {"candidates": spec} if isinstance(spec, list) else spec
        if isinstance(spec, dict):
            check_keys(spec, {"candidates", "rule"}, required={"candidates"}, where=f"selections.{name}")
        if not isinstance(spec, dict) or not isinstance(spec["candidates"], list):
            raise ValueError(
                f"selections: {name!r} must be a list of candidate model names, or a mapping with candidates: "
                f"[...] and rule: one of {list(SELECTION_RULES)}; got {spec!r}."
            )
        try:
            out[str(name)] = Selection([str(c) for c in spec["candidates"]], str(spec.get("rule", "valid")))
        except ValueError as e:
            raise ValueError(f"selections.{name}: {e}") from e
    return out


def workflow_on_data(config: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``config`` moved onto the evaluation's data; what ``data`` does not name stays the workflow's."""
    if not data:
        return config
    provider = Path(str(data.get("provider_uri", config["qlib_init"]["provider_uri"]))).expanduser()
    market = data.get("market", handler_kwargs(config)["instruments"])
    benchmark = data.get("benchmark", port_analysis_configs(config)[0]["backtest"]["benchmark"])
    if "fractions" in data:
        embargo = label_horizon(handler_kwargs(config).get("label", "qlib"))
        calendar = read_calendar(provider)
        segments = Segments.carve(calendar, tuple(data["fractions"]), embargo=embargo)
    elif "segments" in data:
        segments = Segments.from_config(data["segments"])
    else:
        segments = workflow_segments(config)
    return retarget(config, provider.resolve(), market, benchmark, segments)


def model_workflow(entry: ModelEntry, seed: int, data: dict[str, Any], threads: int) -> dict[str, Any]:
    """The workflow of ``entry`` on the evaluation's data, with its overrides, ``seed`` and thread count.

    Overrides merge into the workflow's kwargs key by key, nested dicts included (as qrun merges
    ``BASE_CONFIG_PATH``): overriding one ``model_config`` entry keeps the workflow's others. A
    model argument named ``num_threads`` (LightGBM's) is set to ``threads``; torch and numpy read
    theirs from the worker's environment.
    """
    config = workflow_on_data(load_workflow(entry.workflow), data)
    try:
        provider_path(config)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{entry.name}: {e} Or set data.provider_uri.") from e
    kwargs = update_config(config["task"]["model"]["kwargs"], entry.kwargs)
    config["task"]["model"]["kwargs"] = kwargs
    kwargs["seed"] = seed
    if "num_threads" in kwargs:
        kwargs["num_threads"] = threads
    if entry.score_universe is not None:
        config["task"]["record"] = [_scored_on(r, entry.score_universe) for r in config["task"]["record"]]
    return config


def _scored_on(record: dict[str, Any], universe: str) -> dict[str, Any]:
    """A workflow's signal record replaced by one that keeps only ``universe``'s names."""
    if not is_signal_record(record):
        return record
    kwargs = {**record.get("kwargs", {}), "universe": universe}
    return {"class": "UniverseSignalRecord", "module_path": "storm_bt.workflows.records", "kwargs": kwargs}


def run_folder(parent: Path, name: str, config: dict[str, Any], threads: int) -> Path:
    """``parent/<name>_<digest>``: the digest covers the exact workflow, its thread count (torch's
    results depend on it) and, for storm_bt's own models, their source, so a changed workflow or
    a changed model trains afresh beside the old run instead of reusing its results."""
    identity = {"workflow": config, "threads": threads}
    source = model_source_digest(config["task"]["model"].get("module_path", ""))
    if source is not None:
        identity["model_source"] = source
    what = json.dumps(identity, sort_keys=True, default=str)
    return parent / f"{name}_{hashlib.sha256(what.encode()).hexdigest()[:10]}"


def run_plan(runs: list[tuple[str, Path]]) -> pd.DataFrame:
    """Per model, in order: its runs, those finished before (reused), those to train, and the run
    folders of the same model, seed and fold beside them from another workflow, thread count or
    model code (a changed model retrains every run of every variant that uses it)."""
    rows = []
    for name, run_dir in runs:
        siblings = run_dir.parent.glob(run_dir.name.rsplit("_", 1)[0] + "_*")
        other = sum(1 for d in siblings if d != run_dir and d.is_dir())
        rows.append({"model": name, "runs": 1, "finished": int(qrun_finished(run_dir)), "other versions": other})
    plan = pd.DataFrame(rows, columns=["model", "runs", "finished", "other versions"])
    plan = plan.groupby("model", sort=False).sum().reset_index()
    plan.insert(3, "to train", plan["runs"] - plan["finished"])
    return plan


def model_source_digest(module_path: str) -> str | None:
    """A hash of the Python sources of the storm_bt package a model class lives in (None for other libraries)."""
    parts = module_path.split(".")
    if parts[0] != "storm_bt" or len(parts) < 2:
        return None
    package = Path(__file__).resolve().parents[1] / parts[1]
    files = sorted(package.glob("*.py")) if package.is_dir() else [package.with_suffix(".py")]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def describe(cfg: EvalConfig, config: dict[str, Any], threads: int) -> dict[str, Any]:
    """What every table was measured under: data, label, costs, strategy, seeds, threads and versions."""
    handler, backtest = handler_kwargs(config), port_analysis_configs(config)[0]
    label = handler.get("label", "qlib")
    provider = provider_path(config)
    instruments = provider / "instruments" / f"{handler['instruments']}.txt"
    return {
        "data": {
            "provider_uri": str(provider),
            "market": handler["instruments"],
            "instruments": sum(1 for _ in instruments.open()) if instruments.is_file() else None,
            "benchmark": backtest["backtest"]["benchmark"],
            "segments": config["task"]["dataset"]["kwargs"]["segments"],
            "backtest": [str(backtest["backtest"]["start_time"]), str(backtest["backtest"]["end_time"])],
        },
        "label": {"name": label, "expression": LABELS[label][0], "horizon_sessions": LABELS[label][1]},
        "costs": {k: backtest["backtest"]["exchange_kwargs"].get(k) for k in ("open_cost", "close_cost", "deal_price")},
        "strategy": {"class": backtest["strategy"]["class"]}
        | {k: v for k, v in backtest["strategy"]["kwargs"].items() if k != "signal"},
        "seeds": cfg.seeds,
        "threads_per_run": threads,
        "overrides": {m.name: m.kwargs for m in cfg.entries if m.kwargs},
        "score_universes": {m.name: m.score_universe for m in cfg.entries if m.score_universe},
        "versions": package_versions(),
    }


def described_lines(described: dict[str, Any], data_line: str, seeds_line: str) -> list[str]:
    """The header of a tables.md: the data and seeds as each evaluation words them, then the label,
    costs, strategy and package versions of :func:`describe`, worded once for every table."""
    label, costs = described["label"], described["costs"]
    scored = "; ".join(f"{name} on {universe}'s names" for name, universe in described["score_universes"].items())
    return [
        data_line,
        *([f"Trained on their workflow's universe, judged on another's (score_universe): {scored}."] if scored else []),
        f"Label: {label['name']} = `{label['expression']}` ({label['horizon_sessions']}-session horizon).",
        f"Costs: open {costs['open_cost']}, close {costs['close_cost']} (fraction of notional), fills at "
        f"{costs['deal_price']}; strategy {described['strategy']}; benchmark {described['data']['benchmark']}.",
        seeds_line,
        "Versions: " + ", ".join(f"{k} {v}" for k, v in described["versions"].items()) + ".",
        "",
    ]
