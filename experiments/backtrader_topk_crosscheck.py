"""Replay a qrun run's predictions with TopK-Drop in backtrader and compare with Qlib's backtest.

    python experiments/backtrader_topk_crosscheck.py --run RUN_DIR --csv-dir ../shared/data/dj30

RUN_DIR is the folder qrun ran in (it holds mlruns.db); the strategy settings (topk, n_drop,
rebalance), the costs, the account and the dates are read from the run's own workflow config.
Prints the paper's metrics for both engines and how far their daily accounts are apart.
"""

from __future__ import annotations

import argparse

import pandas as pd

from storm_bt.agents.states import load_bars
from storm_bt.bridge.portfolio import replay_topk
from storm_bt.metrics import portfolio_metrics
from storm_bt.workflows.runs import load_artifacts

REPORT = "portfolio_analysis/report_normal_1day.pkl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="folder qrun ran in (holds mlruns.db)")
    parser.add_argument("--csv-dir", required=True, help="the universe's per-ticker CSV files")
    parser.add_argument("--run-id", help="mlflow run id (default: the latest finished run)")
    args = parser.parse_args()

    run_id, artifacts = load_artifacts(args.run, ("config", "pred.pkl", REPORT), args.run_id)
    record = next(r for r in artifacts["config"]["task"]["record"] if r["class"] == "PortAnaRecord")
    strategy, backtest = record["kwargs"]["config"]["strategy"]["kwargs"], record["kwargs"]["config"]["backtest"]
    costs = backtest["exchange_kwargs"]
    if costs["open_cost"] != costs["close_cost"] or costs.get("deal_price", "close") != "close":
        raise SystemExit("The cross-check replays close fills with one cost per side; this run uses other settings.")
    scores = artifacts["pred.pkl"].iloc[:, 0]
    qlib_account = artifacts[REPORT]["account"]
    bars = load_bars(args.csv_dir, sorted(scores.index.get_level_values("instrument").unique()))
    replayed = replay_topk(
        scores,
        bars,
        qlib_account.index[0],
        qlib_account.index[-1],
        topk=strategy["topk"],
        n_drop=strategy["n_drop"],
        rebalance=strategy.get("rebalance", "daily"),
        cost=costs["open_cost"],
        account=backtest["account"],
    )
    table = pd.DataFrame(
        {
            "qlib": portfolio_metrics(qlib_account.pct_change().dropna()),
            "backtrader": portfolio_metrics(replayed.pct_change().dropna()),
        }
    ).T
    gap = (replayed / qlib_account - 1).abs()
    settings = {k: v for k, v in strategy.items() if k != "signal"}
    print(f"run {run_id}: {qlib_account.index[0].date()} .. {qlib_account.index[-1].date()}, {settings}")
    print(table.to_string(float_format="{:.4f}".format))
    print(f"daily account, largest relative gap: {gap.max():.2e} (on {gap.idxmax().date()})")


if __name__ == "__main__":
    main()
