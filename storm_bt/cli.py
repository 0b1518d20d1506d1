"""``storm-bt``: the command line of storm_bt (data, quickstart)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.logging import RichHandler

from storm_bt.data.schema import DataValidationError, DownloadError
from storm_bt.io import LockedError
from storm_bt.workflows.failure import QrunError

if TYPE_CHECKING:
    from storm_bt.parallel import Executor

__all__ = ["build_parser", "main"]

log = logging.getLogger("storm_bt")

# Errors a user can act on: one line naming what is wrong, exit code 2; anything else is a bug.
USER_ERRORS = (DataValidationError, DownloadError, FileNotFoundError, LockedError, LookupError, QrunError, ValueError)

KEY_METRICS = (
    "IC",
    "ICIR",
    "Rank IC",
    "Rank ICIR",
    "1day.excess_return_with_cost.annualized_return",
    "1day.excess_return_with_cost.information_ratio",
    "1day.excess_return_with_cost.max_drawdown",
)


def _download(args: argparse.Namespace) -> None:
    from storm_bt.data.universes import parse_tickers
    from storm_bt.data.yahoo import download_tickers

    tickers = parse_tickers(args.universe)
    report = download_tickers(tickers, args.start, args.end, args.out, retries=args.retries, backoff=args.backoff)
    log.info("%s: %d downloaded, %d already cached", args.out, len(report.downloaded), len(report.cached))


def _ingest(args: argparse.Namespace) -> None:
    from storm_bt.data.csv_source import load_csv_dir, read_bars_file
    from storm_bt.data.provider import write_provider

    universe = args.universe or Path(args.csv_dir).resolve().name.lower()
    panel = load_csv_dir(args.csv_dir, min_history=args.min_history, on_gap=args.on_gap)
    bench = None
    if args.benchmark_csv:
        bench = read_bars_file(args.benchmark_csv, on_gap="ffill")["adj_close"]
    summary = write_provider(panel, args.qlib_dir, universe, benchmark_close=bench, benchmark=args.benchmark_name)
    log.info(
        "%s provider %s: %d instruments in '%s', benchmark %s, %s .. %s (%d new sessions)",
        summary.mode,
        summary.qlib_dir,
        summary.instruments,
        universe,
        summary.benchmark,
        summary.first_session.date(),
        summary.last_session.date(),
        summary.appended_sessions,
    )


def _pool(args: argparse.Namespace) -> None:
    from storm_bt.data.pooled import write_pooled_universe

    members = write_pooled_universe(args.qlib_dir, args.name, args.keep, args.pool, args.size, args.sessions)
    log.info(
        "universe %s of %s: %d names (%s and the most traded of %s)",
        args.name,
        args.qlib_dir,
        len(members),
        args.keep,
        args.pool,
    )


def _synth(args: argparse.Namespace) -> None:
    from storm_bt.data.synthetic import SyntheticMarketConfig, write_market_csvs

    cfg = SyntheticMarketConfig(
        n_stocks=args.stocks, n_days=args.days, seed=args.seed, start=args.start, n_sectors=args.sectors
    )
    market = write_market_csvs(cfg, args.out)
    dates = market.panel["date"]
    log.info(
        "Synthetic market: %d stocks, %s .. %s, written to %s",
        args.stocks,
        dates.min().date(),
        dates.max().date(),
        args.out,
    )


def _quickstart(args: argparse.Namespace) -> None:
    from storm_bt.pipelines.quickstart import QuickstartConfig, default_workflow_path, run_quickstart

    cfg = QuickstartConfig(
        run_dir=Path(args.run_dir),
        csv_dir=Path(args.csv_dir) if args.csv_dir else None,
        universe=args.universe or (Path(args.csv_dir).resolve().name.lower() if args.csv_dir else "synth"),
        stocks=args.stocks,
        days=args.days,
        seed=args.seed,
        workflow=Path(args.workflow) if args.workflow else default_workflow_path(),
        trade_stock=args.trade_stock,
        agent_steps=args.agent_steps,
    )
    metrics = run_quickstart(cfg)
    shown = metrics.reindex([k for k in KEY_METRICS if k in metrics.index])
    log.info("Quickstart done in %s\n%s", cfg.run_dir, shown.to_string(float_format="{:.4f}".format))


def _factors_export(args: argparse.Namespace) -> None:
    from storm_bt.factors.export import export_run_factors

    path = export_run_factors(args.run, args.out, run_id=args.run_id, start=args.start, end=args.end)
    log.info("Factor store written to %s", path)


def _trade_train(args: argparse.Namespace) -> None:
    from storm_bt.pipelines.trading import TradeConfig, train_agents

    cfg = TradeConfig.from_yaml(args.config)
    if args.jobs is None and args.threads is None and args.executor is None:
        train_agents(cfg, args.out)  # one after another in this process: no start-up cost per agent
    else:
        train_agents(cfg, args.out, *_executor(args))


def _trade_eval(args: argparse.Namespace) -> None:
    from storm_bt.pipelines.trading import evaluate_agents, format_tables

    results = evaluate_agents(args.out)
    log.info("Test-segment results (%s):\n%s", Path(args.out) / "tables.md", format_tables(results))


def _trade_run(args: argparse.Namespace) -> None:
    _trade_train(args)
    _trade_eval(args)


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum`` (argparse names the flag on failure)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def _numbers(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} takes whole numbers separated by commas, got {text!r}.") from None


def _evaluate(args: argparse.Namespace) -> None:
    from storm_bt.pipelines.eval_config import EvalConfig, subset_folder
    from storm_bt.pipelines.evaluate import plan_evaluation, run_evaluation

    cfg = EvalConfig.from_yaml(args.config).subset(
        models=args.models.split(",") if args.models else None,
        seeds=_numbers(args.seeds, "--seeds") if args.seeds else None,
        baseline=args.baseline,
    )
    folds = _numbers(args.folds, "--folds") if args.folds else None
    executor, threads = _executor(args)
    if args.plan:
        plan = plan_evaluation(cfg, args.out, threads, folds)
        total = plan.drop(columns="model").sum()
        print(plan.to_string(index=False))
        print(f"{total['to train']} of {total['runs']} runs to train; {total['finished']} finished before are reused.")
        return
    flags = {"models": args.models, "seeds": args.seeds, "folds": args.folds, "baseline": args.baseline}
    subset = subset_folder(flags)
    tables_dir = Path(args.out) / "subsets" / subset if subset else Path(args.out)
    tables = run_evaluation(cfg, args.out, executor, threads, folds, tables_dir)
    log.info("Tables (%s):\n%s", tables_dir / "tables.md", tables)


def _family(args: argparse.Namespace) -> None:
    from storm_bt.io import atomic_write_text
    from storm_bt.pipelines.snooping import family_from_results, format_family_test, format_valid_record

    test, valid, sources = family_from_results(args.results, args.baseline)
    lines = [*format_family_test(test, args.baseline), "", *format_valid_record(valid, args.baseline)]
    lines += ["", "| model | from |", "|---|---|"]
    lines += [f"| {model} | {path} |" for model, path in sources.items()]
    text = "\n".join([*lines, ""])
    if args.out:
        atomic_write_text(Path(args.out), text)
    log.info("%s", text)


def _report(args: argparse.Namespace) -> None:
    from storm_bt.pipelines.report import write_report

    log.info("Report written to %s", write_report(args.run, args.out))


def _add_executor_flags(p: argparse.ArgumentParser) -> None:
    """Where independent runs go: local processes or a Ray cluster, and how many threads each gets."""
    p.add_argument("--jobs", type=_at_least(1), help="runs at once in local processes (default: cores / --threads)")
    p.add_argument(
        "--threads",
        type=_at_least(1),
        help="threads of every run, part of its identity (default: cores / --jobs; 1 on a Ray cluster)",
    )
    p.add_argument("--executor", choices=("local", "ray"), help="local processes (default) or a Ray cluster")
    p.add_argument("--address", help="Ray head address HOST:PORT (with --executor ray)")
    p.add_argument("--ray-retries", type=_at_least(0), default=1, help="attempts Ray adds when a worker dies mid-run")


def _executor(args: argparse.Namespace) -> tuple[Executor, int]:
    """The executor and per-run thread count the executor flags ask for."""
    from storm_bt.parallel import LocalExecutor, RayExecutor, default_jobs

    if args.executor == "ray":
        if not args.address:
            raise ValueError("--executor ray needs --address HOST:PORT of the cluster's head (`ray start --head`).")
        if args.jobs is not None:
            raise ValueError("--jobs is for the local executor; a Ray cluster runs as many runs as it has CPUs.")
        return RayExecutor(args.address, retries=args.ray_retries), args.threads or 1
    jobs = args.jobs or default_jobs(args.threads or 1)
    return LocalExecutor(jobs), args.threads or max(1, default_jobs() // jobs)


def build_parser() -> argparse.ArgumentParser:
    """The ``storm-bt`` argument parser (exposed for the documentation and the tests)."""
    parser = argparse.ArgumentParser(
        prog="storm-bt", description="STORM factor model with Qlib, gymnasium and backtrader."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="market data: download, ingest into Qlib, synthesize").add_subparsers(
        dest="action", required=True
    )
    p = data.add_parser("download", help="daily bars from Yahoo Finance into a resumable CSV cache")
    p.add_argument("--universe", required=True, help="dj30, sp500 or a comma-separated ticker list")
    p.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    p.add_argument("--end", required=True, help="last date (inclusive), YYYY-MM-DD")
    p.add_argument("--out", required=True, help="CSV cache folder")
    p.add_argument("--retries", type=_at_least(0), default=3, help="extra attempts per ticker on network errors")
    p.add_argument("--backoff", type=float, default=2.0, help="first retry wait in seconds, doubled each time")
    p.set_defaults(func=_download)

    p = data.add_parser(
        "ingest", help="a folder of per-ticker CSV files into a Qlib provider (extends an existing one)"
    )
    p.add_argument("--csv-dir", required=True, help="folder of <TICKER>.csv or <TICKER>.csv.gz files")
    p.add_argument("--qlib-dir", required=True, help="Qlib provider folder to write or extend")
    p.add_argument("--universe", help="instrument list name (default: the CSV folder's name)")
    p.add_argument("--min-history", type=_at_least(1), default=60, help="fewest sessions a ticker needs")
    p.add_argument(
        "--on-gap",
        choices=("raise", "ffill", "nan"),
        default="raise",
        help="missing NYSE sessions inside a ticker's history",
    )
    p.add_argument(
        "--benchmark-csv", help="an index in the same CSV format (default: equal-weight index of the universe)"
    )
    p.add_argument("--benchmark-name", help="instrument name of the benchmark (default: <UNIVERSE>_EW)")
    p.set_defaults(func=_ingest)

    p = data.add_parser(
        "pool", help="a training universe: one universe plus the most traded names of another, in one provider"
    )
    p.add_argument("--qlib-dir", required=True, help="Qlib provider holding both universes")
    p.add_argument("--name", required=True, help="name of the universe to write (instruments/<NAME>.txt)")
    p.add_argument("--keep", required=True, help="universe whose names are all members (the one a model is judged on)")
    p.add_argument("--from", dest="pool", required=True, help="universe the other members are drawn from")
    p.add_argument("--size", type=_at_least(1), required=True, help="members in all")
    p.add_argument(
        "--sessions",
        type=_at_least(1),
        default=252,
        help="rank by mean traded value over the provider's first SESSIONS sessions (keep them inside training)",
    )
    p.set_defaults(func=_pool)

    p = data.add_parser("synth", help="a seeded synthetic market with a planted, learnable signal")
    p.add_argument("--out", required=True, help="folder for the per-ticker CSV files")
    p.add_argument("--stocks", type=_at_least(2), default=30)
    p.add_argument("--days", type=_at_least(1), default=750)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sectors", type=_at_least(1), default=5, help="number of sectors (at most --stocks)")
    p.add_argument("--start", default="2015-01-02", help="first calendar day")
    p.set_defaults(func=_synth)

    p = sub.add_parser("quickstart", help="the whole pipeline on the synthetic market (or --csv-dir), offline")
    p.add_argument("--run-dir", default="runs/quickstart", help="folder that receives every stage's output")
    p.add_argument("--csv-dir", help="real per-ticker CSV files instead of the synthetic market")
    p.add_argument("--universe", help="instrument list name in the provider (default: synth, or the CSV folder's name)")
    p.add_argument("--stocks", type=_at_least(2), default=30)
    p.add_argument("--days", type=_at_least(1), default=750)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workflow", help="workflow YAML to retarget (default: experiments/workflow_storm_small_dj30.yaml)")
    p.add_argument("--trade-stock", help="the stock PPO learns to trade (default: the first ticker)")
    p.add_argument("--agent-steps", type=_at_least(1), default=20_000, help="PPO training steps")
    p.set_defaults(func=_quickstart)

    factors = sub.add_parser("factors", help="STORM factor embeddings per (date, stock)").add_subparsers(
        dest="action", required=True
    )
    p = factors.add_parser("export", help="a trained STORM run's embeddings into an HDF5 factor store")
    p.add_argument("--run", required=True, help="folder qrun ran in (holds mlruns.db), e.g. a quickstart run folder")
    p.add_argument("--out", required=True, help="HDF5 file to write (replaced atomically)")
    p.add_argument("--run-id", help="mlflow run id (default: the latest finished run)")
    p.add_argument("--start", help="first date (default: the workflow's data start)")
    p.add_argument("--end", help="last date (default: the workflow's data end)")
    p.set_defaults(func=_factors_export)

    trade = sub.add_parser("trade", help="RL agents on STORM factors, evaluated in the env and in backtrader")
    trade = trade.add_subparsers(dest="action", required=True)
    for name, func, text in (
        ("train", _trade_train, "factors, then every (stock, agent, seed) trained and selected on valid"),
        ("run", _trade_run, "train, then eval"),
    ):
        p = trade.add_parser(name, help=text)
        p.add_argument("--config", required=True, help="trading YAML, e.g. experiments/trading_dj30.yaml")
        p.add_argument("--out", required=True, help="run folder (reused: finished stages are not redone)")
        _add_executor_flags(p)
        p.set_defaults(func=func)
    p = sub.add_parser("evaluate", help="the paper's tables: models, baselines and ablations over several seeds")
    p.add_argument("--config", required=True, help="evaluation YAML, e.g. experiments/evaluate_dj30.yaml")
    p.add_argument("--out", required=True, help="output folder (a rerun reuses every finished run in it)")
    _add_executor_flags(p)
    p.add_argument("--models", help="run only these models/ablations/selections (comma-separated names), for screening")
    p.add_argument("--seeds", help="run these seeds instead of the config's: 0 to screen, 0,1,2,3,4,5 to add seeds")
    p.add_argument("--folds", help="with rolling: run only these folds (positions from 0, e.g. 0,4,9)")
    p.add_argument("--baseline", help="compare against this model or ablation instead of the config's baseline")
    p.add_argument(
        "--plan",
        action="store_true",
        help="print per model the runs that would train, those reused and older versions beside them; run nothing",
    )
    p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "family", help="does any model of a search beat the baseline? (SPA and StepM over walk-forward results)"
    )
    p.add_argument("results", nargs="+", help="walk-forward results.csv files; a model in several: the last one's")
    p.add_argument("--baseline", required=True, help="the model every other one is tested against, e.g. LightGBM")
    p.add_argument("--out", help="markdown file to write the test to (replaced atomically)")
    p.set_defaults(func=_family)

    p = sub.add_parser("report", help="HTML report with figures for a qrun run folder and/or a trading run folder")
    p.add_argument("run", help="folder qrun ran in (mlruns.db) and/or a `storm-bt trade` run folder")
    p.add_argument("--out", help="folder for report.html and the PNGs (default: RUN/report)")
    p.set_defaults(func=_report)

    p = trade.add_parser("eval", help="every selected policy and Buy & Hold once over test: env and backtrader")
    p.add_argument("--out", required=True, help="run folder written by `storm-bt trade train`")
    p.set_defaults(func=_trade_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``storm-bt`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    handler = RichHandler(show_path=False) if sys.stderr.isatty() else logging.StreamHandler()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", handlers=[handler])
    try:
        args.func(args)
    except USER_ERRORS as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
