"""``storm-bt trade``: the algorithmic-trading experiment of the paper, end to end.

One YAML names the stocks, the price files, where the STORM factors come from, the market rules,
the agents and the seeds. ``train`` gets the factors (a factor store, a qrun run to export, or a
workflow to train first), fits one agent per (stock, agent, seed) on the train segment with
checkpoint selection on valid; ``evaluate`` runs every selected policy once over the test segment
in the env *and* in backtrader and writes the per-stock tables (mean and std over seeds) next to
Buy & Hold. Each stage reuses what a previous run left in the output folder when it still matches.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from storm_bt.agents.sb3 import BUY_AND_HOLD, AgentSpec, evaluate, load_policy, train_agent
from storm_bt.agents.states import FeatureScaler, StockMarket, factor_states, load_bars, price_states
from storm_bt.bridge import Replay, replay
from storm_bt.env.rollout import Episode
from storm_bt.env.trading_env import EnvConfig
from storm_bt.factors.store import FactorStore
from storm_bt.io import atomic_write_text, check_keys, config_from_yaml, exclusive, package_versions
from storm_bt.metrics import PORTFOLIO_METRICS
from storm_bt.parallel import Executor, InProcessExecutor, Task, run_all
from storm_bt.pipelines.tables import markdown_table
from storm_bt.workflows.qrun import load_workflow, provider_path, qrun_finished, run_qrun_once
from storm_bt.workflows.segments import Segments

__all__ = [
    "Splits",
    "TradeConfig",
    "evaluate_agents",
    "format_tables",
    "replay_agent",
    "stock_markets",
    "train_agents",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TradeConfig:
    """The experiment: data, factor source, segments, market rules, agents and seeds."""

    csv_dir: Path
    stocks: list[str]
    factors: dict[str, str]  # exactly one of {path: FILE.h5} / {run: QRUN_DIR} / {workflow: WORKFLOW.yaml}
    env: EnvConfig = field(default_factory=EnvConfig)
    agents: list[AgentSpec] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    segments: Segments | None = None  # default: the STORM workflow's, so test stays out of sample for both

    def __post_init__(self) -> None:
        if len(self.factors) != 1 or next(iter(self.factors)) not in ("path", "run", "workflow"):
            raise ValueError(f"factors must name exactly one of path, run or workflow; got {self.factors}.")
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names) or BUY_AND_HOLD.name in names:
            raise ValueError(f"Agent names must be unique and not {BUY_AND_HOLD.name!r}; got {names}.")
        if not self.stocks or not self.seeds:
            raise ValueError("A trading experiment needs at least one stock and one seed.")

    @classmethod
    def from_yaml(cls, path: str | Path) -> TradeConfig:
        return config_from_yaml(path, cls.from_dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TradeConfig:
        check_keys(raw, {f.name for f in fields(cls)}, required={"csv_dir", "stocks", "factors"})
        return cls(
            csv_dir=Path(raw["csv_dir"]).expanduser(),
            stocks=[str(s).upper() for s in raw["stocks"]],
            factors={k: str(v) for k, v in raw["factors"].items()},
            env=EnvConfig(**(raw.get("env") or {})),
            agents=[AgentSpec(**agent) for agent in raw.get("agents") or []],
            seeds=[int(s) for s in raw.get("seeds", [0, 1, 2])],
            segments=Segments.from_config(raw["segments"]) if raw.get("segments") else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "csv_dir": str(self.csv_dir.resolve()),
            "stocks": self.stocks,
            "factors": {kind: str(Path(source).expanduser().resolve()) for kind, source in self.factors.items()},
            "env": asdict(self.env),
            "agents": [asdict(a) for a in self.agents],
            "seeds": self.seeds,
            "segments": self.segments.to_config() if self.segments else None,
        }


# -- factors ------------------------------------------------------------------------------------------


def _factor_store(cfg: TradeConfig, out: Path) -> tuple[Path, Segments]:
    """The factor store to read and the segments it was trained with (config segments win)."""
    kind, source = next(iter(cfg.factors.items()))
    if kind == "path":
        path = Path(source).expanduser()
    else:
        path = out / "factors.h5"
        if path.is_file():
            log.info("factors: reusing %s", path)
        else:
            run_dir = Path(source) if kind == "run" else _train_storm(Path(source), out / "storm")
            from storm_bt.factors.export import export_run_factors

            log.info("factors: exporting STORM embeddings of %s to %s", run_dir, path)
            export_run_factors(run_dir, path)
    with FactorStore(path) as store:
        trained_on = store.segments
    if cfg.segments is not None:
        return path, cfg.segments
    if trained_on is None:
        raise ValueError(f"{path} does not record the segments STORM was trained with; set `segments` in the config.")
    return path, trained_on


def _train_storm(workflow: Path, run_dir: Path) -> Path:
    """Train STORM with qrun (once: a finished run in ``run_dir`` is reused)."""
    try:
        provider_path(load_workflow(workflow))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{workflow}: {e}") from e
    if qrun_finished(run_dir):
        log.info("factors: reusing the STORM run in %s", run_dir)
    else:
        log.info("factors: training STORM with qrun %s (log: %s)", workflow, run_dir / "qrun.log")
    run_qrun_once(workflow, run_dir, progress=lambda line: log.info("  %s", line))
    return run_dir


# -- markets --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Splits:
    """One stock's train, valid and test markets for one state, scaled with train statistics."""

    train: StockMarket
    valid: StockMarket
    test: StockMarket


def stock_markets(
    csv_dir: Path, stocks: list[str], segments: Segments, states: set[str], store_path: Path | None = None
) -> dict[tuple[str, str], Splits]:
    """(stock, state) -> train/valid/test markets for each of ``states`` (a STORM state reads ``store_path``)."""
    if store_path is None and states - {"prices"}:
        raise ValueError(f"States {sorted(states - {'prices'})} read STORM factors: give a factor store.")
    bars = load_bars(csv_dir, stocks)
    out = {}
    with FactorStore(store_path) if store_path else nullcontext() as store:
        for stock in stocks:
            first, last = segments.train[0], segments.test[1]
            days = bars[stock].loc[first:last].index
            for state in states:
                frame = (
                    price_states(bars[stock])
                    if state == "prices"
                    else factor_states(store, stock, days, state == "tokens")
                )
                market = StockMarket.build(stock, bars[stock], frame)
                parts = {name: market.between(a, b) for name, (a, b) in segments.items()}
                scaler = FeatureScaler.fit(parts["train"].features)
                out[stock, state] = Splits(**{name: part.scaled(scaler) for name, part in parts.items()})
    return out


def _agent_dir(out: Path, stock: str, agent: AgentSpec, seed: int) -> Path:
    return out / "agents" / stock / agent.name / f"seed{seed}"


def _trained(agent_dir: Path, spec: AgentSpec, seed: int, env: EnvConfig, splits: Splits) -> bool:
    """A finished agent of the same spec, seed, rules and dates is reused."""
    record_path = agent_dir / "agent.json"
    if not (record_path.is_file() and (agent_dir / "best.zip").is_file()):
        return False
    record = json.loads(record_path.read_text())
    dates = [f"{splits.train.dates[0]:%Y-%m-%d}", f"{splits.train.dates[-1]:%Y-%m-%d}"]
    return (
        record["spec"] == json.loads(json.dumps(asdict(spec)))
        and record["seed"] == seed
        and record["env"] == asdict(spec.env_config(env))
        and record["train"] == dates
    )


# -- stages ---------------------------------------------------------------------------------------------


def train_agents(cfg: TradeConfig, out: str | Path, executor: Executor | None = None, threads: int = 1) -> None:
    """Factors, then every (stock, agent, seed) trained and selected on valid, under ``out``.

    The agents are independent runs on ``executor`` (default: one after another in this process),
    each limited to ``threads``; every agent is reported by name if it fails, after the others end.
    """
    out = Path(out)
    with exclusive(out, "trading run folder"):
        _train_agents(cfg, out, executor, threads)


def _train_agents(cfg: TradeConfig, out: Path, executor: Executor | None, threads: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    store_path, segments = _factor_store(cfg, out)
    manifest = {
        "config": cfg.to_dict(),
        "factor_store": str(store_path.resolve()),
        "segments": segments.to_config(),
        "versions": package_versions(),
    }
    atomic_write_text(out / "trade.json", json.dumps(manifest, indent=2))
    markets = stock_markets(cfg.csv_dir, cfg.stocks, segments, {a.state for a in cfg.agents}, store_path)
    jobs = [(stock, agent, seed) for stock in cfg.stocks for agent in cfg.agents for seed in cfg.seeds]
    tasks = []
    for stock, agent, seed in jobs:
        splits, agent_dir = markets[stock, agent.state], _agent_dir(out, stock, agent, seed)
        if not _trained(agent_dir, agent, seed, cfg.env, splits):
            kwargs = {"spec": agent, "train": splits.train, "valid": splits.valid, "base": cfg.env, "seed": seed}
            name = f"agent {stock} {agent.name} seed {seed}"
            tasks.append(Task(name, train_agent, kwargs | {"out_dir": agent_dir}, threads, fresh_process=False))
    log.info("agents: %d to train, %d reused (same spec, seed, rules and dates)", len(tasks), len(jobs) - len(tasks))
    run_all(executor or InProcessExecutor(), tasks)
    log.info("agents: %d trained, %d reused in %s", len(tasks), len(jobs) - len(tasks), out)


def _load(out: Path) -> tuple[TradeConfig, dict[str, Any]]:
    manifest_path = out / "trade.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{out} holds no trading run (no trade.json): run `storm-bt trade train` first.")
    manifest = json.loads(manifest_path.read_text())
    return TradeConfig.from_dict(manifest["config"]), manifest


def _on_test(out: Path, cfg: TradeConfig, splits: Splits, agent: AgentSpec, seed: int) -> tuple[Episode, Replay]:
    """The selected policy once over test: in the env, then in backtrader."""
    test = splits.test
    policy = load_policy(agent, _agent_dir(out, test.stock, agent, seed))
    rules = agent.env_config(cfg.env)
    return evaluate(policy, test, rules), replay(policy, test.dates, test.opens, test.closes, test.features, rules)


def replay_agent(out: str | Path, stock: str, agent_name: str, seed: int) -> tuple[Episode, Replay]:
    """One agent of a trading run over test, in the env and in backtrader."""
    out = Path(out)
    cfg, manifest = _load(out)
    agents = {a.name: a for a in [BUY_AND_HOLD, *cfg.agents]}
    if agent_name not in agents or stock not in cfg.stocks:
        raise LookupError(f"{out} has stocks {cfg.stocks} and agents {sorted(agents)}; got {stock} / {agent_name}.")
    agent = agents[agent_name]
    segments = Segments.from_config(manifest["segments"])
    markets = stock_markets(cfg.csv_dir, [stock], segments, {agent.state}, Path(manifest["factor_store"]))
    return _on_test(out, cfg, markets[stock, agent.state], agent, seed)


def evaluate_agents(out: str | Path) -> pd.DataFrame:
    """Every selected policy (and Buy & Hold) once over test, in the env and in backtrader.

    Writes ``results.csv`` (one row per stock, agent, seed and engine), the daily values of every
    run under ``values/`` and ``tables.md``; returns the results.
    """
    out = Path(out)
    with exclusive(out, "trading run folder"):
        return _evaluate_agents(out)


def _evaluate_agents(out: Path) -> pd.DataFrame:
    cfg, manifest = _load(out)
    segments = Segments.from_config(manifest["segments"])
    states = {a.state for a in [BUY_AND_HOLD, *cfg.agents]}
    markets = stock_markets(cfg.csv_dir, cfg.stocks, segments, states, Path(manifest["factor_store"]))
    rows, values = [], {}
    runs = [(s, BUY_AND_HOLD, 0) for s in cfg.stocks]
    runs += [(s, a, seed) for s in cfg.stocks for a in cfg.agents for seed in cfg.seeds]
    for stock, agent, seed in tqdm(runs, desc="test", unit="run", disable=None):
        episode, referee = _on_test(out, cfg, markets[stock, agent.state], agent, seed)
        for engine, metrics in (("env", episode.metrics), ("backtrader", referee.metrics)):
            rows.append({"stock": stock, "agent": agent.name, "seed": seed, "engine": engine} | metrics)
        values[f"{stock}/{agent.name}/seed{seed}"] = pd.DataFrame(
            {
                "env": episode.values,
                "backtrader": referee.values,
                "shares": episode.records["shares"],
                "action": episode.records["action"],
            }
        )
    results = pd.DataFrame(rows)
    atomic_write_text(out / "results.csv", results.to_csv(index=False))
    for key, frame in values.items():
        path = out / "values" / f"{key.replace('/', '_')}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, frame.to_csv())
    atomic_write_text(out / "tables.md", format_tables(results, manifest))
    return results


def format_tables(results: pd.DataFrame, manifest: dict[str, Any] | None = None) -> str:
    """Per-stock markdown tables: one row per agent, ``mean ± std`` over seeds, env and backtrader."""
    lines = []
    if manifest:
        seg, env = manifest["segments"], manifest["config"]["env"]
        lines += [
            f"Test {seg['test'][0]} .. {seg['test'][1]} (train {seg['train'][0]} .. {seg['train'][1]}, "
            f"valid {seg['valid'][0]} .. {seg['valid'][1]}); fill {env['fill']}, commission "
            f"{env['commission_bps']} bps, slippage {env['slippage_bps']} bps; seeds "
            f"{manifest['config']['seeds']}.",
            "",
        ]
    columns = {m: m for m in PORTFOLIO_METRICS}
    for stock, frame in results.groupby("stock", sort=False):
        lines += [f"### {stock}", "", *markdown_table(frame, ["agent", "engine"], columns, count=False)]
    return "\n".join(lines)
