"""``storm-bt quickstart``: the whole pipeline on one market, every stage's output in one run folder.

Stages: market (synthetic, or a CSV folder) -> Qlib provider -> STORM (small preset) on Alpha158
through ``qrun`` (training with checkpoints, IC/RankIC, weekly TopK-Drop backtest, paper
metrics) -> factor store -> PPO on one stock's STORM factors (train, select on valid) -> the
selected policy once over test in the env and in backtrader -> HTML report. A stage whose inputs
did not change since the last run is reused, and the log says so; training checkpoints are kept
per market, so a rerun on the same data resumes instead of training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from storm_bt.agents.sb3 import AgentSpec
from storm_bt.data.csv_source import csv_files, load_csv_dir
from storm_bt.data.provider import benchmark_name, read_calendar, write_provider
from storm_bt.data.synthetic import SyntheticMarketConfig, write_market_csvs
from storm_bt.env.trading_env import EnvConfig
from storm_bt.handlers.alpha158_us import label_horizon
from storm_bt.io import atomic_write_text, exclusive
from storm_bt.pipelines.report import write_report
from storm_bt.pipelines.trading import TradeConfig, evaluate_agents, format_tables, train_agents
from storm_bt.workflows.qrun import latest_metrics, load_workflow, retarget, run_qrun, write_workflow
from storm_bt.workflows.segments import Segments

__all__ = ["QuickstartConfig", "default_workflow_path", "run_quickstart"]

log = logging.getLogger(__name__)

STAGES = 7


def default_workflow_path() -> Path:
    """The STORM (small preset) DJ30 workflow shipped in the repository's ``experiments/`` folder."""
    return Path(__file__).resolve().parents[2] / "experiments" / "workflow_storm_small_dj30.yaml"


@dataclass(frozen=True)
class QuickstartConfig:
    """What the quickstart runs on; every field is a CLI flag."""

    run_dir: Path = Path("runs/quickstart")
    csv_dir: Path | None = None  # real CSVs instead of the synthetic market
    universe: str = "synth"  # instrument list name in the provider
    stocks: int = 30
    days: int = 750
    seed: int = 0
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)  # train / valid / test share of the sessions
    workflow: Path = field(default_factory=default_workflow_path)
    trade_stock: str | None = None  # the stock PPO trades (default: the first ticker)
    agent_steps: int = 20_000  # PPO training steps


def _fingerprint(csv_dir: Path) -> str:
    digest = hashlib.sha256()
    for ticker, path in csv_files(csv_dir).items():
        digest.update(ticker.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _market_stage(cfg: QuickstartConfig) -> Path:
    if cfg.csv_dir is not None:
        log.info("[1/%d] market: using CSV files in %s", STAGES, cfg.csv_dir)
        return cfg.csv_dir
    out = cfg.run_dir / "market"
    synth = SyntheticMarketConfig(n_stocks=cfg.stocks, n_days=cfg.days, seed=cfg.seed)
    meta = out / "_market.json"
    if meta.exists() and json.loads(meta.read_text())["config"] == asdict(synth):
        log.info("[1/%d] market: reusing the synthetic market in %s (same parameters)", STAGES, out)
        return out
    log.info(
        "[1/%d] market: generating %d stocks x %d sessions (seed %d) into %s",
        STAGES,
        cfg.stocks,
        cfg.days,
        cfg.seed,
        out,
    )
    shutil.rmtree(out, ignore_errors=True)
    write_market_csvs(synth, out)
    return out


def _provider_stage(cfg: QuickstartConfig, csv_dir: Path) -> tuple[Path, str]:
    """The provider folder and the fingerprint of the source files it was written from."""
    qlib_dir = cfg.run_dir / "qlib_data"
    stamp = qlib_dir / "source.sha256"
    fingerprint = _fingerprint(csv_dir)
    if stamp.exists() and stamp.read_text() == fingerprint:
        log.info("[2/%d] provider: reusing %s (source files unchanged)", STAGES, qlib_dir)
        return qlib_dir, fingerprint
    log.info("[2/%d] provider: writing %s from %s", STAGES, qlib_dir, csv_dir)
    panel = load_csv_dir(csv_dir, min_history=60)  # validated before anything of the old provider is touched
    write_provider(panel, qlib_dir, cfg.universe, rebuild=True)
    atomic_write_text(stamp, fingerprint)
    return qlib_dir, fingerprint


def _workflow_stage(cfg: QuickstartConfig, template: dict, qlib_dir: Path, data_fingerprint: str) -> pd.Series:
    label = template["task"]["dataset"]["kwargs"]["handler"]["kwargs"].get("label", "qlib")
    calendar = read_calendar(qlib_dir)
    segments = Segments.carve(calendar, cfg.fractions, embargo=label_horizon(label))
    segments.check(calendar, embargo=label_horizon(label))
    config = retarget(template, qlib_dir.resolve(), cfg.universe, benchmark_name(cfg.universe), segments)
    model_kwargs = config["task"]["model"]["kwargs"]
    if "run_dir" in model_kwargs:  # checkpoints per market: same data resumes, other data trains afresh
        model_kwargs["run_dir"] = str((cfg.run_dir / "checkpoints" / data_fingerprint[:12]).resolve())
    path = write_workflow(config, cfg.run_dir / "workflow.yaml")
    log.info(
        "[3/%d] STORM: qrun %s (train %s..%s, valid %s..%s, test %s..%s; TopK-Drop backtest and RankIC on test)",
        STAGES,
        path,
        *(f"{d:%Y-%m-%d}" for _, pair in segments.items() for d in pair),
    )
    run_qrun(path, cwd=cfg.run_dir, log_path=cfg.run_dir / "qrun.log", progress=lambda line: log.info("  %s", line))
    return latest_metrics(cfg.run_dir)


def _factor_stage(cfg: QuickstartConfig, source_digest: str) -> Path:
    """The trained run's embeddings; a new export also retires agents trained on the previous one."""
    store = cfg.run_dir / "factors.h5"
    stamp = cfg.run_dir / "factors.source"
    if store.is_file() and stamp.is_file() and stamp.read_text() == source_digest:
        log.info("[4/%d] factors: reusing %s (same data and workflow)", STAGES, store)
        return store
    from storm_bt.factors.export import export_run_factors

    log.info("[4/%d] factors: exporting STORM embeddings to %s", STAGES, store)
    export_run_factors(cfg.run_dir, store)
    shutil.rmtree(cfg.run_dir / "trading", ignore_errors=True)
    atomic_write_text(stamp, source_digest)
    return store


def _trading_stages(cfg: QuickstartConfig, csv_dir: Path, store: Path) -> Path:
    stock = cfg.trade_stock or next(iter(csv_files(csv_dir)))
    trade = TradeConfig(
        csv_dir=csv_dir,
        stocks=[stock.upper()],
        factors={"path": str(store.resolve())},
        env=EnvConfig(),
        agents=[AgentSpec(name="ppo_storm", algo="ppo", state="factors", timesteps=cfg.agent_steps,
                          eval_every=max(cfg.agent_steps // 8, 1))],
        seeds=[cfg.seed],
    )  # fmt: skip
    out = cfg.run_dir / "trading"
    log.info("[5/%d] PPO: %d steps on %s's STORM factors, checkpoint selected on valid, in %s", STAGES,
             cfg.agent_steps, trade.stocks[0], out)  # fmt: skip
    train_agents(trade, out)
    log.info("[6/%d] test: the selected policy and Buy & Hold in the env and replayed in backtrader", STAGES)
    results = evaluate_agents(out)
    log.info("Trading on the test segment (%s):\n%s", out / "tables.md", format_tables(results))
    return out


def run_quickstart(cfg: QuickstartConfig) -> pd.Series:
    """Run every stage into ``cfg.run_dir``; return the workflow's recorded metrics."""
    if not cfg.workflow.exists():
        raise FileNotFoundError(
            f"Workflow {cfg.workflow} not found; run from a clone of the repository or pass --workflow."
        )
    template = load_workflow(cfg.workflow)  # a broken workflow fails before any stage runs
    with exclusive(cfg.run_dir, "quickstart run folder"):
        return _run_stages(cfg, template)


def _run_stages(cfg: QuickstartConfig, template: dict) -> pd.Series:
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    csv_dir = _market_stage(cfg)
    qlib_dir, fingerprint = _provider_stage(cfg, csv_dir)
    metrics = _workflow_stage(cfg, template, qlib_dir, fingerprint)
    atomic_write_text(cfg.run_dir / "metrics.json", metrics.to_json(indent=2))
    workflow_text = (cfg.run_dir / "workflow.yaml").read_text()
    store = _factor_stage(cfg, hashlib.sha256((fingerprint + workflow_text).encode()).hexdigest())
    _trading_stages(cfg, csv_dir, store)
    log.info("[7/%d] report: %s", STAGES, write_report(cfg.run_dir))
    return metrics
