"""Wall time of one small synthetic walk-forward evaluation on three executors, and of a fold's data
preparation built against reused.

    python benchmarks/bench_evaluate.py [--folds 3] [--seeds 2]

LightGBM on a 20-stock synthetic market, each run with 1 thread: serially (``--jobs 1``), on a
local pool (``--jobs 2``) and on a local Ray cluster started on the loopback address. Every
executor starts from an empty output folder, so each one does the same work; the tables must
come out byte-identical (checked). Then one fold's Alpha158 handler is built (Qlib's expression
engine and processors, what every qrun run would do) and reloaded from its pickle (what every run
after the first does).
"""

from __future__ import annotations

import argparse
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def _timed(cfg: EvalConfig, out: Path, executor: Executor) -> tuple[float, bytes]:
    start = time.perf_counter()
    run_evaluation(cfg, out, executor, threads=1)
    return time.perf_counter() - start, (out / "tables.md").read_bytes()


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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_market_csvs(
            SyntheticMarketConfig(n_stocks=20, n_days=200 + 100 + 4 + args.folds * STEP + 60), tmp / "csv"
        )
        write_provider(load_csv_dir(tmp / "csv"), tmp / "qlib", "synth")
        cfg = _config(tmp / "qlib", args.folds, args.seeds)
        runs = args.folds * args.seeds
        serial, tables = _timed(cfg, tmp / "serial", LocalExecutor(1))
        pooled, pooled_tables = _timed(cfg, tmp / "jobs2", LocalExecutor(2))
        address, ray = _ray_cluster()
        try:
            clustered, ray_tables = _timed(cfg, tmp / "ray", RayExecutor(address))
        finally:
            subprocess.run([str(ray), "stop", "--force"], capture_output=True, check=False)
        if not tables == pooled_tables == ray_tables:
            raise SystemExit("the executors gave different tables")

        fold = rolling_folds(cfg.rolling, read_calendar(tmp / "qlib"))[-1]
        workflow = retarget(
            load_workflow(EXPERIMENTS / "workflow_lgbm_alpha158_dj30.yaml"), tmp / "qlib", "synth", "SYNTH_EW", fold
        )
        start = time.perf_counter()
        prepared = prepare_handler(workflow, str(tmp / "handler.pkl"))
        built = time.perf_counter() - start
        start = time.perf_counter()
        with open(prepared, "rb") as fh:
            pickle.load(fh)
        reused = time.perf_counter() - start

    cores = len(os.sched_getaffinity(0))
    print(
        f"walk-forward, LightGBM, {args.folds} folds x {args.seeds} seeds = {runs} runs, 1 thread each, {cores} cores"
    )
    print(f"  serial (--jobs 1):       {serial:7.1f} s")
    print(f"  local pool (--jobs 2):   {pooled:7.1f} s   ({serial / pooled:4.2f}x serial)")
    print(f"  local Ray cluster:       {clustered:7.1f} s   ({serial / clustered:4.2f}x serial)")
    print("  tables byte-identical on all three executors")
    print(f"fold data preparation: built {built:6.2f} s, reused {reused:6.3f} s ({built / reused:5.0f}x faster reused)")


if __name__ == "__main__":
    main()
