"""The trading experiment's agent training, end to end: the settings agents had before issue 16,
trained one after another in one process (as ``storm-bt trade train`` ran them), against today's
defaults on ``--jobs`` worker processes, on one factor store; wall time and validation wealth of both.

    python benchmarks/bench_trading.py --factors runs/trade_dj30/factors.h5 [--config experiments/trading_dj30.yaml]
        [--out runs/bench_trading] [--jobs 2]

Every (stock, agent, seed) of the config is trained in each arm, into ``<out>/before`` and
``<out>/now``; then each arm is evaluated once over test (``trade eval``), so both arms' test
tables are in their folders' ``tables.md``. Printed: each arm's training wall time and their ratio,
and per agent the best validation log wealth (the score that selects the checkpoint), mean ± std
over stocks and seeds, with the paired difference now - before. One round per arm (the old one
takes about half an hour): run it on a quiet machine; ``benchmarks/bench_agents.py`` repeats
single agents in interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from bench_agents import BEFORE
from timing import machine_line

from storm_bt.parallel import LocalExecutor, default_jobs
from storm_bt.pipelines.trading import TradeConfig, evaluate_agents, train_agents

ROOT = Path(__file__).resolve().parents[1]


def _best_wealth(run: Path) -> dict[tuple[str, str, int], float]:
    """(stock, agent, seed) -> best validation log wealth, from every ``agent.json`` of a trading run."""
    scores = {}
    for path in sorted(run.glob("agents/*/*/seed*/agent.json")):
        record = json.loads(path.read_text())
        stock, agent = path.parts[-4], path.parts[-3]
        scores[stock, agent, record["seed"]] = record["best"]["valid_log_wealth"]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=Path, required=True, help="a factor store (storm-bt factors export)")
    parser.add_argument("--config", type=Path, default=ROOT / "experiments" / "trading_dj30.yaml")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_trading"))
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="worker processes of today's arm")
    args = parser.parse_args()
    if not args.factors.is_file():
        raise SystemExit(f"No factor store at {args.factors}: run `storm-bt trade train` or `storm-bt factors export`.")
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: the arms must train every agent, not reuse them; pick a new --out.")

    now = replace(TradeConfig.from_yaml(args.config), factors={"path": str(args.factors.resolve())})
    old_agents = [replace(a, **BEFORE[a.algo]) if a.algo in BEFORE else a for a in now.agents]
    arms = {"before": (replace(now, agents=old_agents), None), "now": (now, LocalExecutor(args.jobs))}
    walls, scores = {}, {}
    for name, (cfg, executor) in arms.items():
        run = args.out / name
        start = time.perf_counter()
        train_agents(cfg, run, executor, threads=1)
        walls[name] = time.perf_counter() - start
        scores[name] = _best_wealth(run)
        evaluate_agents(run)
    if scores["before"].keys() != scores["now"].keys():
        raise RuntimeError(f"The arms trained different agents: {sorted(scores['before'])} / {sorted(scores['now'])}.")

    runs = len(scores["now"])
    print(f"{args.config.name}: {runs} agents per arm; {machine_line(1)}")
    print(f"  before (old settings, one process): {walls['before'] / 60:.1f} min")
    print(f"  now (defaults, {args.jobs} worker processes): {walls['now'] / 60:.1f} min")
    print(f"  time before / now: {walls['before'] / walls['now']:.2f}x")
    print("  best valid log wealth, mean ± std over stocks and seeds: before | now | now - before (± s.e.)")
    for agent in now.agents:
        keys = [k for k in scores["now"] if k[1] == agent.name]
        before = np.array([scores["before"][k] for k in keys])
        after = np.array([scores["now"][k] for k in keys])
        diff, se = after - before, (after - before).std(ddof=1) / np.sqrt(len(keys))
        print(f"    {agent.name:12s} {before.mean():.3f} ± {before.std(ddof=1):.3f} | {after.mean():.3f} ± "
              f"{after.std(ddof=1):.3f} | {diff.mean():+.3f} ± {se:.3f}")  # fmt: skip
    print(f"  test tables: {args.out / 'before' / 'tables.md'}, {args.out / 'now' / 'tables.md'}")


if __name__ == "__main__":
    main()
