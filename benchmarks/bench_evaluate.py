"""Wall time of one small synthetic walk-forward evaluation on three executors, and of a fold's data
preparation built against reused.

    python benchmarks/bench_evaluate.py [--folds 3] [--seeds 2] [--repeats 3]

LightGBM on a 20-stock synthetic market, each run with 1 thread: serially (``--jobs 1``), on a
local pool (``--jobs 2``) and on a local Ray cluster started on the loopback address. Every
executor starts from an empty output folder, so each one does the same work; the tables must
come out byte-identical (checked). Then one fold's Alpha158 handler is built (Qlib's expression
engine and processors, what every qrun run would do) and reloaded from its pickle (what every run
after the first does). All five are measured in interleaved rounds (``benchmarks/timing.py``).
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import count
from pathlib import Path

from timing import interleaved, machine_line, spread

from storm_bt.data.csv_source import load_csv_dir
from storm_bt.data.provider import read_calendar, write_provider
from storm_bt.data.synthetic import SyntheticMarketConfig, write_market_csvs
from storm_bt.parallel import Executor, LocalExecutor, RayExecutor
from storm_bt.pipelines.eval_config import EvalConfig
from storm_bt.pipelines.evaluate import run_evaluation
from storm_bt.workflows.prepared import prepare_handler
from storm_bt.workflows.qrun import load_workflow, retarget
from storm_bt.workflows.rolling import rolling_folds

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
STEP = 120


def _config(provider: Path, folds: int, seeds: int) -> EvalConfig:
    calendar = read_calendar(provider)
    first = calendar[len(calendar) - folds * STEP]
    raw = {
        "seeds": list(range(seeds)),
        "data": {"provider_uri": str(provider), "market": "synth", "benchmark": "SYNTH_EW"},
        "rolling": {"first_test": f"{first:%Y-%m-%d}", "step": STEP, "valid_sessions": 100, "min_train_sessions": 200},
        "models": {"LightGBM": str(EXPERIMENTS / "workflow_lgbm_alpha158_dj30.yaml")},
    }
    return EvalConfig.from_dict(raw)


def _ray_cluster() -> tuple[str, Path]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray = Path(sys.executable).with_name("ray")
    start = [str(ray), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2"]
    subprocess.run([*start, "--include-dashboard=false", "--disable-usage-stats"], check=True, capture_output=True)
    return f"127.0.0.1:{port}", ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_market_csvs(
            SyntheticMarketConfig(n_stocks=20, n_days=200 + 100 + 4 + args.folds * STEP + 60), tmp / "csv"
        )
        write_provider(load_csv_dir(tmp / "csv"), tmp / "qlib", "synth")
        cfg = _config(tmp / "qlib", args.folds, args.seeds)
        fold = rolling_folds(cfg.rolling, read_calendar(tmp / "qlib"))[-1]
        workflow = retarget(
            load_workflow(EXPERIMENTS / "workflow_lgbm_alpha158_dj30.yaml"), tmp / "qlib", "synth", "SYNTH_EW", fold
        )
        folders = count()
        tables: set[bytes] = set()

        def evaluation(executor: Executor) -> Callable[[], float]:
            def seconds() -> float:  # every round starts from an empty folder: the same work each time
                out = tmp / f"evaluation{next(folders)}"
                start = time.perf_counter()
                run_evaluation(cfg, out, executor, threads=1)
                elapsed = time.perf_counter() - start
                tables.add((out / "tables.md").read_bytes())
                shutil.rmtree(out)
                return elapsed

            return seconds

        def built() -> float:
            start = time.perf_counter()
            prepare_handler(workflow, str(tmp / f"handler{next(folders)}.pkl"))
            return time.perf_counter() - start

        def reused() -> float:
            start = time.perf_counter()
            with open(next(tmp.glob("handler*.pkl")), "rb") as fh:
                pickle.load(fh)
            return time.perf_counter() - start

        address, ray = _ray_cluster()
        try:
            measures = {
                "serial": evaluation(LocalExecutor(1)),
                "jobs2": evaluation(LocalExecutor(2)),
                "ray": evaluation(RayExecutor(address)),
                "built": built,
                "reused": reused,
            }
            figures = interleaved(measures, args.repeats)
        finally:
            subprocess.run([str(ray), "stop", "--force"], capture_output=True, check=False)
        if len(tables) != 1:
            raise SystemExit("the executors or rounds gave different tables")

    runs = args.folds * args.seeds
    print(f"walk-forward, LightGBM, {args.folds} folds x {args.seeds} seeds = {runs} runs, 1 thread each; "
          f"{machine_line(args.repeats)}; median [min .. max]")  # fmt: skip
    serial = figures["serial"]
    print(f"  serial (--jobs 1):       {spread(serial, '.1f')} s")
    for name, label in (("jobs2", "local pool (--jobs 2):  "), ("ray", "local Ray cluster:      ")):
        print(f"  {label} {spread(figures[name], '.1f')} s   ({spread(serial / figures[name], '.2f')}x serial)")
    print("  tables byte-identical on all three executors and every round")
    built, reused = figures["built"], figures["reused"]
    print(f"fold data preparation: built {spread(built, '.2f')} s, reused {spread(reused, '.3f')} s "
          f"({spread(built / reused, '.0f')}x faster reused)")  # fmt: skip


if __name__ == "__main__":
    main()
