"""``storm-bt evaluate``: the paper's tables, every model over several seeds, from one YAML.

Each (workflow, seed) runs once through ``qrun`` in its own folder named after a digest of the
exact workflow it ran and its thread count, so a rerun reuses every finished run and a changed
workflow trains afresh beside the old one. The runs are independent: an executor
(:mod:`storm_bt.parallel`) spreads them over processes or a Ray cluster. With a ``rolling:`` block
the evaluation is a walk-forward one (:mod:`storm_bt.pipelines.walk_forward`).

Written to the output folder: ``results.csv`` (one row per model and seed, every metric qrun
logged, plus wall time), ``tables.md`` (portfolio management with the market row, factor quality,
ablations and per-stock trading, as mean ± std over seeds) and ``evaluate.json`` (the data range,
costs, label, seeds, threads and package versions the tables were made with).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from storm_bt.io import atomic_write_text
from storm_bt.metrics import PORTFOLIO_METRICS as PM
from storm_bt.parallel import Executor, Task, run_all
from storm_bt.pipelines.eval_config import (
    EvalConfig,
    ModelEntry,
    describe,
    described_lines,
    model_workflow,
    run_folder,
    run_plan,
)
from storm_bt.pipelines.tables import markdown_table, mean_std
from storm_bt.pipelines.trading import TradeConfig, evaluate_agents, format_tables, train_agents
from storm_bt.pipelines.walk_forward import plan_walk_forward, run_walk_forward
from storm_bt.workflows.qrun import check_workflow_split, latest_metrics, qrun_finished, qrun_wall, run_workflow

__all__ = ["format_eval_tables", "plan_evaluation", "run_evaluation"]

log = logging.getLogger(__name__)

FACTOR_QUALITY = ("IC", "ICIR", "Rank IC", "Rank ICIR")
ABLATION = ("Rank IC", "Rank ICIR", "APY", "CW", "ASR", "MDD")


def _trading(
    cfg: EvalConfig, out: Path, runs: dict[tuple[str, int], Path], executor: Executor, threads: int
) -> pd.DataFrame:
    """The trading experiment on the factors of the chosen model's first-seed run, over the same seeds."""
    assert cfg.trading is not None
    source = runs[cfg.trading.get("factors_from", cfg.models[0].name), cfg.seeds[0]]
    trade = replace(TradeConfig.from_yaml(cfg.trading["config"]), factors={"run": str(source)}, seeds=cfg.seeds)
    trade_dir = out / "trading" / f"{source.parent.name}_{source.name}"
    log.info("trading: %s on the factors of %s, seeds %s, in %s", trade.stocks, source, cfg.seeds, trade_dir)
    train_agents(trade, trade_dir, executor, threads)
    return evaluate_agents(trade_dir)


def _jobs(cfg: EvalConfig, out: Path, threads: int) -> list[tuple[str, ModelEntry, int, dict[str, Any], Path]]:
    """(group, entry, seed, workflow, run folder) of every model and ablation over every seed."""
    jobs = []
    for group, entries in (("model", cfg.models), ("ablation", cfg.ablations)):
        for entry in entries:
            for seed in cfg.seeds:
                config = model_workflow(entry, seed, cfg.data, threads)
                check_workflow_split(config)  # before any run: a leaky split is refused, not measured
                jobs.append(
                    (group, entry, seed, config, run_folder(out / "runs" / entry.slug, f"seed{seed}", config, threads))
                )
    return jobs


def plan_evaluation(cfg: EvalConfig, out: str | Path, threads: int, folds: list[int] | None = None) -> pd.DataFrame:
    """What :func:`run_evaluation` would train and reuse, per model (see :func:`run_plan`); runs nothing."""
    if cfg.rolling is not None:
        return plan_walk_forward(cfg, out, threads, folds)
    if folds is not None:
        raise ValueError("--folds needs a rolling: block in the config.")
    return run_plan([(entry.name, run_dir) for _, entry, _, _, run_dir in _jobs(cfg, Path(out), threads)])


def run_evaluation(
    cfg: EvalConfig,
    out: str | Path,
    executor: Executor,
    threads: int,
    folds: list[int] | None = None,
    tables_dir: str | Path | None = None,
) -> str:
    """Run every model and ablation over every seed on ``executor`` (reusing finished runs), then the
    trading experiment; write ``results.csv``, ``tables.md`` and ``evaluate.json`` and return the tables.

    :param threads: threads of every run (part of each run's identity: results depend on it).
    :param folds: with a ``rolling:`` block, the positions of the folds to run (default: all).
    :param tables_dir: where the tables, results and description go (default: ``out``; a screening
        subset writes elsewhere, so the whole evaluation's tables stay as they are).
    """
    if cfg.rolling is not None:
        return run_walk_forward(cfg, out, executor, threads, folds, tables_dir)
    if folds is not None:
        raise ValueError("--folds needs a rolling: block in the config.")
    out = Path(out)
    tables_dir = Path(tables_dir or out)
    tables_dir.mkdir(parents=True, exist_ok=True)
    jobs = _jobs(cfg, out, threads)
    pending = [j for j in jobs if not qrun_finished(j[4])]
    log.info("%d runs, %d finished before, %d to run", len(jobs), len(jobs) - len(pending), len(pending))
    tasks = [
        Task(f"{e.name} seed {s}", run_workflow, {"config": c, "run_dir": str(d)}, threads) for _, e, s, c, d in pending
    ]
    run_all(executor, tasks)
    rows, runs = [], {}
    for group, entry, seed, _, run_dir in jobs:
        runs[entry.name, seed] = run_dir
        metrics = latest_metrics(run_dir)
        row = {"group": group, "model": entry.name, "seed": seed, "run": str(run_dir), "wall_s": qrun_wall(run_dir)}
        rows.append(row | metrics.to_dict())
    results = pd.DataFrame(rows)
    atomic_write_text(tables_dir / "results.csv", results.to_csv(index=False))
    trading = _trading(cfg, out, runs, executor, threads) if cfg.trading else None
    if trading is not None:
        atomic_write_text(tables_dir / "trading.csv", trading.to_csv(index=False))
    described = describe(cfg, jobs[0][3], threads)
    atomic_write_text(tables_dir / "evaluate.json", json.dumps(described, indent=2, default=str))
    tables = format_eval_tables(results, described, trading)
    atomic_write_text(tables_dir / "tables.md", tables)
    return tables


def format_eval_tables(results: pd.DataFrame, described: dict[str, Any], trading: pd.DataFrame | None = None) -> str:
    """The paper's tables in markdown: mean ± std (ddof 1) over seeds, n = number of seeds."""
    data = described["data"]
    seg = data["segments"]
    lines = described_lines(
        described,
        f"Data: {data['market']} ({data['instruments']} instruments) from {data['provider_uri']}; train "
        f"{seg['train'][0]} .. {seg['train'][1]}, valid {seg['valid'][0]} .. {seg['valid'][1]}, test "
        f"{seg['test'][0]} .. {seg['test'][1]} (backtest {data['backtest'][0]} .. {data['backtest'][1]}).",
        f"Seeds: {described['seeds']}; overrides of the workflows: {described['overrides'] or 'none'}.",
    )
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
