"""Agent training: wall time, env steps/s and validation log wealth at the settings agents had before
issue 16 and at today's defaults, in one run.

    python benchmarks/bench_agents.py [--algo ppo] [--stock AAPL] [--seeds 0,1,2] [--factors FILE.h5]

The agent is the first one of ``--algo`` in ``experiments/trading_dj30.yaml`` (its step budget and
validation interval); ``BEFORE`` restores the accounts and batch sizes it trained with until
2026-11. Each seed is one round: the agent trained with the old settings, then with the current
ones, on the same stock, one thread each, so the time ratio is taken within a round. Printed: wall
seconds and env steps/s (median [min .. max] over rounds), the ratio, and the best validation log
wealth, the score that selects the checkpoint (mean ± std over rounds). Without ``--factors`` the
agent sees price features (``state: prices``; no STORM run needed) over the STORM workflow's
segments; with it, the factor store's pooled vectors and the segments it records.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from timing import interleaved, machine_line, spread

from storm_bt.agents.sb3 import DEFAULTS, AgentSpec, train_agent
from storm_bt.data.testing import shared_data_dir
from storm_bt.factors.store import FactorStore
from storm_bt.pipelines.trading import Splits, TradeConfig, stock_markets
from storm_bt.workflows.qrun import load_workflow, workflow_segments
from storm_bt.workflows.segments import Segments

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
BEFORE = {  # the SB3 defaults they left alone are spelled out: DQN's batch 32, SAC's 256
    "ppo": {"n_envs": 8, "hyperparams": {"n_steps": 256, "batch_size": 256}},
    "dqn": {"n_envs": 1, "hyperparams": {"train_freq": 4, "gradient_steps": 1, "batch_size": 32}},
    "sac": {"n_envs": 1, "hyperparams": {"train_freq": 2, "gradient_steps": 1, "batch_size": 256}},
}


def _segments(factors: Path | None, cfg: TradeConfig, config: Path) -> Segments:
    """The factor store's training segments, else those of the STORM workflow the trading config names."""
    if factors is not None:
        with FactorStore(factors) as store:
            if store.segments is None:
                raise SystemExit(f"{factors} records no segments; export it from a qrun run (storm-bt factors export).")
            return store.segments
    if "workflow" not in cfg.factors:
        raise SystemExit(f"{config} names no STORM workflow to take the segments from; pass --factors.")
    return workflow_segments(load_workflow(ROOT / cfg.factors["workflow"]))  # named from the repository root


def _training(
    spec: AgentSpec, splits: Splits, cfg: TradeConfig, seeds: list[int], log: dict[str, list[float]]
) -> Callable[[], float]:
    """One training per call, the next seed each time: wall seconds; the best valid log wealth goes to ``log``."""
    pending = iter(seeds)

    def measure() -> float:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            record = train_agent(spec, splits.train, splits.valid, cfg.env, next(pending), out)
            seconds = time.perf_counter() - start
        log.setdefault(spec.name, []).append(record["best"]["valid_log_wealth"])
        return seconds

    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=sorted(BEFORE), default="ppo")
    parser.add_argument("--stock", default="AAPL")
    parser.add_argument("--seeds", default="0,1,2", help="one round per seed")
    parser.add_argument("--csv-dir", type=Path, help="default: ../shared/data/dj30")
    parser.add_argument("--factors", type=Path, help="a factor store (storm-bt factors export); default: price states")
    parser.add_argument("--config", type=Path, default=EXPERIMENTS / "trading_dj30.yaml")
    args = parser.parse_args()

    cfg = TradeConfig.from_yaml(args.config)
    shared = shared_data_dir()
    csv_dir = args.csv_dir or (shared / "dj30" if shared else None)
    if csv_dir is None or not csv_dir.is_dir():
        raise SystemExit("No DJ30 prices: pass --csv-dir (a folder of per-stock CSVs).")
    state = "factors" if args.factors else "prices"
    templates = [a for a in cfg.agents if a.algo == args.algo]
    if not templates:
        raise SystemExit(f"{args.config} has no {args.algo} agent to take the step budget from.")
    template = templates[0]
    now = replace(template, name="now", state=state)
    before = replace(now, name="before", **BEFORE[args.algo])
    segments = _segments(args.factors, cfg, args.config)
    splits = stock_markets(csv_dir, [args.stock.upper()], segments, {state}, args.factors)[args.stock.upper(), state]
    seeds = [int(s) for s in args.seeds.split(",")]

    with tempfile.TemporaryDirectory() as warm_up:  # first-call costs (imports, numba, torch) fall on neither
        train_agent(replace(now, timesteps=1), splits.train, splits.valid, cfg.env, 0, warm_up)
    wealth: dict[str, list[float]] = {}
    walls = interleaved({s.name: _training(s, splits, cfg, seeds, wealth) for s in (before, now)}, len(seeds))

    print(f"{args.algo.upper()} on {args.stock} ({state}), {now.timesteps:,} steps, valid {segments.valid[0]:%Y-%m-%d}"
          f" .. {segments.valid[1]:%Y-%m-%d}; {machine_line(len(seeds))}")  # fmt: skip
    for spec in (before, now):
        used = DEFAULTS[args.algo] | spec.hyperparams
        settings = ", ".join([f"n_envs {spec.n_envs}"] + [f"{k} {used[k]}" for k in BEFORE[args.algo]["hyperparams"]])
        values = np.asarray(wealth[spec.name])
        print(f"  {spec.name:6s} ({settings}): wall {spread(walls[spec.name], '.1f')} s, "
              f"{spread(spec.timesteps / walls[spec.name])} steps/s, best valid log wealth "
              f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}")  # fmt: skip
    print(f"  time before / now: {spread(walls['before'] / walls['now'], '.2f')}x")


if __name__ == "__main__":
    main()
