"""``storm-bt evaluate``: the paper's tables, every model over several seeds, from one YAML.

The YAML names the models (Qlib workflows: STORM and the baselines), the ablations (more
workflows), the seeds, optionally the data to run them all on (provider, universe, benchmark and
dates; by default each workflow's own) and optionally a trading experiment whose agents read the
factors of the first seed of one STORM run. Each (workflow, seed) runs once through ``qrun`` in
its own folder named after a digest of the exact workflow it ran, so a rerun reuses every
finished run and a changed workflow trains afresh beside the old one.

Written to the output folder: ``results.csv`` (one row per model and seed, every metric qrun
logged, plus wall time), ``tables.md`` (portfolio management with the market row, factor quality,
ablations and per-stock trading, as mean ± std over seeds) and ``evaluate.json`` (the data range,
costs, label, seeds and package versions the tables were made with).
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

from storm_bt.data.provider import read_calendar
from storm_bt.handlers.alpha158_us import LABELS, label_horizon
from storm_bt.io import atomic_write_text, check_keys, config_from_yaml, package_versions
from storm_bt.metrics import PORTFOLIO_METRICS as PM
from storm_bt.pipelines.tables import markdown_table, mean_std
from storm_bt.pipelines.trading import TradeConfig, evaluate_agents, format_tables, train_agents
from storm_bt.workflows.qrun import (
    handler_kwargs,
    latest_metrics,
    load_workflow,
    port_analysis_configs,
    provider_path,
    qrun_finished,
    retarget,
    run_qrun_once,
    workflow_segments,
    write_workflow,
)
from storm_bt.workflows.segments import Segments

__all__ = ["EvalConfig", "ModelEntry", "format_eval_tables", "run_evaluation"]

log = logging.getLogger(__name__)

FACTOR_QUALITY = ("IC", "ICIR", "Rank IC", "Rank ICIR")
ABLATION = ("Rank IC", "Rank ICIR", "APY", "CW", "ASR", "MDD")


@dataclass(frozen=True)
class ModelEntry:
    """One row of a table: a workflow, and model kwargs that override the workflow's."""

    name: str
    workflow: Path
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")


@dataclass(frozen=True)
class EvalConfig:
    """Models, ablations, seeds, the data they run on, and the optional trading experiment."""

    models: list[ModelEntry]
    seeds: list[int]
    ablations: list[ModelEntry] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # provider_uri, market, benchmark, segments | fractions
    trading: dict[str, str] | None = None  # {config: TRADING.yaml, factors_from: MODEL NAME}

    def __post_init__(self) -> None:
        if not self.models or not self.seeds:
            raise ValueError("An evaluation needs at least one model and one seed.")
        names = [m.name for m in [*self.models, *self.ablations]]
        if len(set(names)) != len(names) or len({m.slug for m in [*self.models, *self.ablations]}) != len(names):
            raise ValueError(f"Model and ablation names must be unique (also once lower-cased); got {names}.")
        check_keys(self.data, {"provider_uri", "market", "benchmark", "segments", "fractions"}, where="data")
        if "segments" in self.data and "fractions" in self.data:
            raise ValueError("data: give segments or fractions, not both.")
        if self.trading is not None:
            check_keys(self.trading, {"config", "factors_from"}, required={"config"}, where="trading")
            source = self.trading.get("factors_from", self.models[0].name)
            if source not in [m.name for m in self.models]:
                raise ValueError(f"trading.factors_from {source!r} is not one of the models.")

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
                check_keys(spec, {"workflow", "kwargs"}, required={"workflow"}, where=str(name))
                workflow = (base / spec["workflow"]).resolve()
                if not workflow.is_file():
                    raise ValueError(f"{name}: workflow {workflow} not found.")
                out.append(ModelEntry(str(name), workflow, dict(spec.get("kwargs") or {})))
            return out

        trading = dict(raw["trading"]) if raw.get("trading") else None
        if trading and "config" in trading:
            trading["config"] = str((base / trading["config"]).resolve())
        return cls(
            models=entries(raw.get("models")),
            ablations=entries(raw.get("ablations")),
            seeds=[int(s) for s in raw.get("seeds", [0, 1, 2])],
            data=dict(raw.get("data") or {}),
            trading=trading,
        )


# -- one (workflow, seed) --------------------------------------------------------------------------------


def _port_analysis(config: dict[str, Any]) -> dict[str, Any]:
    return port_analysis_configs(config)[0]


def _on_data(config: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``config`` moved onto the evaluation's data; what ``data`` does not name stays the workflow's."""
    if not data:
        return config
    provider = Path(str(data.get("provider_uri", config["qlib_init"]["provider_uri"]))).expanduser()
    market = data.get("market", handler_kwargs(config)["instruments"])
    benchmark = data.get("benchmark", _port_analysis(config)["backtest"]["benchmark"])
    if "fractions" in data:
        embargo = label_horizon(handler_kwargs(config).get("label", "qlib"))
        calendar = read_calendar(provider)
        segments = Segments.carve(calendar, tuple(data["fractions"]), embargo=embargo)
    elif "segments" in data:
        segments = Segments.from_config(data["segments"])
    else:
        segments = workflow_segments(config)
    return retarget(config, provider.resolve(), market, benchmark, segments)


def _workflow_for(entry: ModelEntry, seed: int, data: dict[str, Any]) -> dict[str, Any]:
    config = _on_data(load_workflow(entry.workflow), data)
    try:
        provider_path(config)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{entry.name}: {e} Or set data.provider_uri.") from e
    kwargs = config["task"]["model"]["kwargs"]
    kwargs.update(entry.kwargs)
    kwargs["seed"] = seed
    return config


def _run_folder(out: Path, entry: ModelEntry, seed: int, config: dict[str, Any]) -> Path:
    """The folder of this exact workflow: its name carries a digest of the workflow it runs."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return out / "runs" / entry.slug / f"seed{seed}_{digest}"


def _run_one(entry: ModelEntry, seed: int, config: dict[str, Any], run_dir: Path, tag: str) -> tuple[pd.Series, float]:
    """Run (or reuse) one workflow; its metrics and the wall time of the run that made them."""
    if qrun_finished(run_dir):
        log.info("%s %s seed %d: reusing the finished run in %s", tag, entry.name, seed, run_dir)
    else:
        kwargs = config["task"]["model"]["kwargs"]
        if "run_dir" in kwargs:  # checkpoints beside the run: an interrupted run resumes
            kwargs["run_dir"] = str((run_dir / "checkpoints").resolve())
        write_workflow(config, run_dir / "workflow.yaml")
        log.info("%s %s seed %d: qrun %s", tag, entry.name, seed, run_dir / "workflow.yaml")
    wall = run_qrun_once(run_dir / "workflow.yaml", run_dir, progress=lambda line: log.info("  %s", line))
    return latest_metrics(f"sqlite:///{(run_dir / 'mlruns.db').resolve()}"), wall


# -- the evaluation ---------------------------------------------------------------------------------------


def _describe(cfg: EvalConfig, config: dict[str, Any]) -> dict[str, Any]:
    """What every table was measured under: data, label, costs, strategy, seeds and versions."""
    handler, backtest = handler_kwargs(config), _port_analysis(config)
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
        "overrides": {m.name: m.kwargs for m in [*cfg.models, *cfg.ablations] if m.kwargs},
        "versions": package_versions(),
    }


def _trading(cfg: EvalConfig, out: Path, runs: dict[tuple[str, int], Path]) -> pd.DataFrame:
    """The trading experiment on the factors of the chosen model's first-seed run, over the same seeds."""
    assert cfg.trading is not None
    source = runs[cfg.trading.get("factors_from", cfg.models[0].name), cfg.seeds[0]]
    trade = replace(TradeConfig.from_yaml(cfg.trading["config"]), factors={"run": str(source)}, seeds=cfg.seeds)
    trade_dir = out / "trading" / f"{source.parent.name}_{source.name}"
    log.info("trading: %s on the factors of %s, seeds %s, in %s", trade.stocks, source, cfg.seeds, trade_dir)
    train_agents(trade, trade_dir)
    return evaluate_agents(trade_dir)


def run_evaluation(cfg: EvalConfig, out: str | Path) -> str:
    """Run every model and ablation over every seed (reusing finished runs), then the trading
    experiment; write ``results.csv``, ``tables.md`` and ``evaluate.json`` and return the tables."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        (group, e, s)
        for group, es in (("model", cfg.models), ("ablation", cfg.ablations))
        for e in es
        for s in cfg.seeds
    ]
    rows, runs, described = [], {}, None
    for i, (group, entry, seed) in enumerate(jobs, 1):
        config = _workflow_for(entry, seed, cfg.data)
        described = described or _describe(cfg, config)
        run_dir = _run_folder(out, entry, seed, config)
        metrics, wall = _run_one(entry, seed, config, run_dir, f"[{i}/{len(jobs)}]")
        runs[entry.name, seed] = run_dir
        rows.append(
            {"group": group, "model": entry.name, "seed": seed, "run": str(run_dir), "wall_s": wall} | metrics.to_dict()
        )
    results = pd.DataFrame(rows)
    atomic_write_text(out / "results.csv", results.to_csv(index=False))
    trading = _trading(cfg, out, runs) if cfg.trading else None
    if trading is not None:
        atomic_write_text(out / "trading.csv", trading.to_csv(index=False))
    atomic_write_text(out / "evaluate.json", json.dumps(described, indent=2, default=str))
    tables = format_eval_tables(results, described, trading)
    atomic_write_text(out / "tables.md", tables)
    return tables


def format_eval_tables(results: pd.DataFrame, described: dict[str, Any], trading: pd.DataFrame | None = None) -> str:
    """The paper's tables in markdown: mean ± std (ddof 1) over seeds, n = number of seeds."""
    data, label, costs = described["data"], described["label"], described["costs"]
    seg = data["segments"]
    lines = [
        f"Data: {data['market']} ({data['instruments']} instruments) from {data['provider_uri']}; train "
        f"{seg['train'][0]} .. {seg['train'][1]}, valid {seg['valid'][0]} .. {seg['valid'][1]}, test "
        f"{seg['test'][0]} .. {seg['test'][1]} (backtest {data['backtest'][0]} .. {data['backtest'][1]}).",
        f"Label: {label['name']} = `{label['expression']}` ({label['horizon_sessions']}-session horizon).",
        f"Costs: open {costs['open_cost']}, close {costs['close_cost']} (fraction of notional), fills at "
        f"{costs['deal_price']}; strategy {described['strategy']}; benchmark {data['benchmark']}.",
        f"Seeds: {described['seeds']}; overrides of the workflows: {described['overrides'] or 'none'}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in described["versions"].items()) + ".",
        "",
    ]
    models = results[results["group"] == "model"]
    market = [f"market ({data['benchmark']})"]
    market += [mean_std(models[f"paper.market.{m}"].iloc[:1]) if f"paper.market.{m}" in models else "n/a" for m in PM]
    lines += ["## Portfolio management (test, net of costs)", ""]
    lines += markdown_table(models, ["model"], {m: f"paper.{m}" for m in PM}, extra_rows=[market])
    lines += ["## Factor quality (test)", ""]
    lines += markdown_table(models, ["model"], {m: m for m in FACTOR_QUALITY})
    ablations = results[results["group"] == "ablation"]
    if not ablations.empty:
        reference = models[models["model"] == models["model"].iloc[0]]
        lines += ["## Ablations (test)", ""]
        columns = {m: f"paper.{m}" if m in PM else m for m in ABLATION}
        lines += markdown_table(pd.concat([reference, ablations]), ["model"], columns)
    if trading is not None:
        lines += ["## Algorithmic trading (test, per stock)", "", format_tables(trading)]
    return "\n".join(lines)
