"""``storm-bt report RUN``: one self-contained HTML page (figures embedded) plus the PNGs, for a
qrun run folder (portfolio backtest, factor quality, codebook usage) and/or a trading run folder
(per-stock equity with fills, env vs backtrader), in RUN itself or in RUN/trading (the quickstart's).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.pyplot as plt
import pandas as pd

from storm_bt.io import atomic_write_text
from storm_bt.metrics import PORTFOLIO_METRICS, daily_rank_ic, portfolio_metrics
from storm_bt.workflows.runs import load_artifacts

__all__ = ["write_report"]

REPORT = "portfolio_analysis/report_normal_1day.pkl"
POSITIONS = "portfolio_analysis/positions_normal_1day.pkl"


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _wealth(returns: pd.Series) -> pd.Series:
    return (1.0 + returns).cumprod()


def portfolio_figures(run_dir: Path, out: Path) -> tuple[list[Path], pd.DataFrame]:
    """Equity and drawdown against the benchmark, daily RankIC, turnover and holdings, code usage."""
    _, art = load_artifacts(run_dir, ("pred.pkl", "label.pkl", REPORT, POSITIONS))
    report = art[REPORT]
    net, bench = report["return"] - report["cost"], report["bench"]
    figures = []

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, height_ratios=[2, 1])
    for name, returns in (("strategy (net of costs)", net), ("benchmark", bench)):
        wealth = _wealth(returns)
        top.plot(wealth.index, wealth, label=name)
        bottom.plot(wealth.index, wealth / wealth.cummax() - 1.0, label=name)
    top.set_ylabel("wealth (start = 1)")
    top.legend()
    bottom.set_ylabel("drawdown")
    top.set_title("TopK-Drop backtest")
    figures.append(_save(fig, out / "equity_drawdown.png"))

    daily = daily_rank_ic(art["pred.pkl"].iloc[:, 0], art["label.pkl"].iloc[:, 0]).dropna()
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.bar(daily.index, daily, width=1.0, color="tab:gray", label="daily RankIC")
    ax.plot(daily.index, daily.rolling(20, min_periods=5).mean(), color="tab:red", label="20-session mean")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title(f"RankIC: mean {daily.mean():.4f}, ICIR {daily.mean() / daily.std():.3f}")
    ax.legend()
    figures.append(_save(fig, out / "rank_ic.png"))

    holdings = pd.Series({pd.Timestamp(day): len(pos.get_stock_list()) for day, pos in art[POSITIONS].items()})
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 4.5), sharex=True)
    top.plot(report.index, report["turnover"], color="tab:purple")
    top.set_ylabel("turnover")
    bottom.step(holdings.index, holdings, where="post", color="tab:green")
    bottom.set_ylabel("names held")
    figures.append(_save(fig, out / "turnover_holdings.png"))

    for folder in ("storm", "storm/member0"):  # a model of several members: its first member's training
        try:
            _, storm = load_artifacts(run_dir, (f"{folder}/code_usage", f"{folder}/training_history"))
        except LookupError:  # not a storm_bt window model
            continue
        figures.append(codebook_figure(storm[f"{folder}/code_usage"], out))
        figures.append(training_figure(storm[f"{folder}/training_history"], out))
        break

    table = pd.DataFrame({"strategy": portfolio_metrics(net), "benchmark": portfolio_metrics(bench)}).T
    return figures, table


def codebook_figure(usage: dict[str, dict[str, list[int]]], out: Path) -> Path:
    """The last epoch's code counts per codebook (the paper's Fig. 3a)."""
    last = usage[max(usage, key=int)]
    fig, axes = plt.subplots(1, len(last), figsize=(4.5 * len(last), 3.2), squeeze=False)
    for ax, (branch, hist) in zip(axes[0], sorted(last.items()), strict=True):
        used = sum(1 for c in hist if c)
        ax.bar(range(len(hist)), hist, width=1.0)
        ax.set_title(f"{branch.upper()} codebook: {used}/{len(hist)} codes used")
        ax.set_xlabel("code")
    return _save(fig, out / "codebook_usage.png")


def training_figure(history: list[dict[str, float]], out: Path) -> Path:
    """Per epoch: each weighted loss term's gradient norm on each encoder, and each codebook's perplexity.

    Shows which terms drive the representation (the return terms should not be drowned by
    reconstruction) and whether the codebooks stay in use.
    """
    frame = pd.DataFrame(history).set_index("epoch")
    gradients = [c for c in frame if c.startswith("grad_")]
    encoders = sorted({c.split(".", 1)[1] for c in gradients})
    perplexity = [c for c in frame if c.startswith("perplexity_")]
    panels = len(encoders) + bool(perplexity)
    fig, axes = plt.subplots(1, panels, figsize=(4.8 * panels, 3.6), squeeze=False)
    for ax, encoder in zip(axes[0], encoders, strict=False):
        for column in sorted(c for c in gradients if c.endswith(f".{encoder}")):
            values = frame[column].where(frame[column] > 0)
            ax.plot(frame.index, values, marker="o", label=column[len("grad_") : -len(encoder) - 1])
        ax.set_yscale("log")
        ax.set_title(f"gradient norm on the {encoder.replace('_', ' ')}")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=6, ncol=2)
    if perplexity:
        ax = axes[0][-1]
        for column in perplexity:
            ax.plot(frame.index, frame[column], marker="o", label=column.split("_", 1)[1].upper())
        ax.set_title("codebook usage perplexity")
        ax.set_xlabel("epoch")
        ax.legend()
    return _save(fig, out / "training.png")


def trading_figures(run_dir: Path, out: Path) -> tuple[list[Path], pd.DataFrame]:
    """Per stock: test equity of every agent (first seed) with its fills, and env vs backtrader."""
    results = pd.read_csv(run_dir / "results.csv")
    figures = []
    for stock in results["stock"].unique():
        runs = sorted((run_dir / "values").glob(f"{stock}_*_seed{results['seed'].min()}.csv"))
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, height_ratios=[2, 1])
        for path in runs:
            frame = pd.read_csv(path, index_col=0, parse_dates=True)
            agent = path.stem[len(stock) + 1 : path.stem.rindex("_seed")]
            wealth = frame["env"] / frame["env"].iloc[0]
            line = top.plot(wealth.index, wealth, label=agent)[0]
            change = frame["shares"].diff().shift(-1).fillna(0)  # decided at t, filled at t+1
            top.scatter(wealth.index[change > 0], wealth[change > 0], marker="^", color=line.get_color(), s=18)
            top.scatter(wealth.index[change < 0], wealth[change < 0], marker="v", color=line.get_color(), s=18)
            bottom.plot(frame.index, frame["backtrader"] / frame["env"] - 1.0, label=agent)
        top.set_ylabel("wealth (start = 1)")
        top.set_title(f"{stock}: test segment (^ buy, v sell)")
        top.legend(fontsize=8)
        bottom.set_ylabel("backtrader / env - 1")
        figures.append(_save(fig, out / f"trading_{stock}.png"))
    table = results.groupby(["stock", "agent", "engine"], sort=False)[list(PORTFOLIO_METRICS)].mean()
    return figures, table


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` and its PNGs into ``out`` (default ``RUN/report``); return the HTML path."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    if (run_dir / "mlruns.db").is_file():
        sections.append(("Portfolio management (qrun)", *portfolio_figures(run_dir, out)))
    trading = next((d for d in (run_dir, run_dir / "trading") if (d / "results.csv").is_file()), None)
    if trading is not None:
        sections.append(("Algorithmic trading", *trading_figures(trading, out)))
    if not sections:
        raise FileNotFoundError(
            f"{run_dir} holds neither a qrun run (mlruns.db) nor a trading run (results.csv, here or in trading/)."
        )
    body = [f"<h1>storm_bt report: {html.escape(str(run_dir.resolve()))}</h1>"]
    for title, figures, table in sections:
        body += [f"<h2>{html.escape(title)}</h2>", table.to_html(float_format="{:.4f}".format)]
        for png in figures:
            data = base64.b64encode(png.read_bytes()).decode()
            body.append(f'<figure><img alt="{png.stem}" src="data:image/png;base64,{data}"></figure>')
    meta = json.dumps({"run": str(run_dir.resolve()), "figures": [p.name for _, f, _ in sections for p in f]})
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>storm_bt report</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}img{max-width:100%}"
        "table{border-collapse:collapse}td,th{padding:2px 8px;border:1px solid #ccc}</style>"
        f"<script type='application/json' id='report-meta'>{meta}</script></head><body>"
        + "\n".join(body)
        + "</body></html>"
    )
    atomic_write_text(out / "report.html", page)
    return out / "report.html"
