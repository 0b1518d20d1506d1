"""``storm-bt evaluate`` with a ``rolling:`` block: every model retrained on each fold, judged once on
the whole out-of-sample span, with significance tests against a baseline.

Three stages, each a list of independent tasks for the executor; whatever finished before is reused:

1. prepare: the processed handler of each fold (processors fit on that fold's train segment),
   once for every model and seed that reads it (:mod:`storm_bt.workflows.prepared`);
2. fit: one qrun run per (model, seed, fold) in ``runs/<model>/fold<k>_seed<s>_<digest>/``,
   recording its test predictions (``SignalRecord``) and that fold's IC (``SigAnaRecord``);
3. span: per (model, seed), and per model for its seed ensemble, the folds' predictions stitched in
   date order and analysed once (IC, TopK-Drop backtest, paper metrics) in
   ``spans/<model>/<seed|ensemble>_<digest>/``, a folder ``storm-bt report`` reads like a qrun run.

A ``selections:`` entry adds rows stitched from the fold runs its candidates trained, choosing per
seed and fold on the valid segment or on the earlier folds' record, and naming the candidate the
whole record recommends next (:mod:`storm_bt.pipelines.selection`). Then ``results.csv`` (one row
per model and seed or ensemble: metrics, significance, compute seconds), ``tables.md`` and
``evaluate.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from storm_bt.data.provider import provider_digest, read_calendar
from storm_bt.handlers.alpha158_us import label_horizon
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
    slug,
)
from storm_bt.pipelines.selection import choose_on_past_folds, choose_on_valid, format_choices
from storm_bt.pipelines.significance import (
    ENSEMBLE,
    SpanSeries,
    compare,
    kept_valid,
    method_note,
    read_rank_ic,
    read_span_series,
    replicate_t,
    valid_difference,
)
from storm_bt.pipelines.snooping import FamilyTest, family_test, format_family_test
from storm_bt.pipelines.tables import mean_std
from storm_bt.workflows.prepared import handler_key, prepare_handler, with_prepared_handler
from storm_bt.workflows.qrun import (
    check_workflow_split,
    handler_kwargs,
    kept_valid_rank_ic,
    latest_metrics,
    port_analysis_configs,
    provider_path,
    qrun_finished,
    qrun_machine,
    qrun_wall,
    retarget,
    run_workflow,
)
from storm_bt.workflows.records import is_signal_record
from storm_bt.workflows.rolling import rolling_folds
from storm_bt.workflows.segments import Segments
from storm_bt.workflows.span import analyse_span, span_finished

__all__ = ["format_walk_forward_tables", "plan_walk_forward", "run_walk_forward"]

log = logging.getLogger(__name__)

CHOICE_COLUMNS = ["selection", "seed", "fold", "chosen"]  # one selection's choice for one seed and fold
RECOMMENDED_COLUMNS = ["selection", "seed", "chosen"]  # a past-folds selection's choice after the record


@dataclass(frozen=True)
class FoldRun:
    """One (model, seed, fold): its workflow, its run folder and the prepared handler it reads."""

    group: str
    entry: ModelEntry
    seed: int
    fold: int
    config: dict[str, Any]
    run_dir: Path
    prepared: Path

    @property
    def name(self) -> str:
        test = self.config["task"]["dataset"]["kwargs"]["segments"]["test"]
        return f"{self.entry.name} seed {self.seed} fold {self.fold} (test {test[0]}..{test[1]})"


@dataclass(frozen=True)
class Span:
    """One row of the tables: a model's folds stitched for one seed, or for all its seeds (ensemble)."""

    group: str
    name: str
    entry: ModelEntry  # whose workflow's analysis records run on the span (a selection: its first candidate)
    seed: int | str  # a seed, or ENSEMBLE
    runs: tuple[FoldRun, ...]  # every seed's folds, in (seed, date) order
    span_dir: Path
    trained: tuple[FoldRun, ...]  # every run the row paid for: ``runs``, or all its candidates' (a selection)


def _on_segments(config: dict[str, Any], segments: Segments) -> dict[str, Any]:
    """``config`` on other dates, with its own provider, market and benchmark."""
    benchmark = port_analysis_configs(config)[0]["backtest"]["benchmark"]
    return retarget(config, provider_path(config), handler_kwargs(config)["instruments"], benchmark, segments)


def _fold_workflow(entry: ModelEntry, seed: int, cfg: EvalConfig, fold: Segments, threads: int) -> dict[str, Any]:
    """The model's workflow on ``fold``: handler and processors on the fold's dates, fold records only."""
    config = _on_segments(model_workflow(entry, seed, cfg.data, threads), fold)
    check_workflow_split(config)
    config["task"]["record"] = [r for r in config["task"]["record"] if _fold_record(r)]
    return config


def _fold_record(record: dict[str, Any]) -> bool:
    """Per fold: its predictions and its own IC; the rest of the analysis runs once on the span."""
    return is_signal_record(record) or record["class"] == "SigAnaRecord"


def _span_workflow(entry: ModelEntry, cfg: EvalConfig, folds: list[Segments], threads: int) -> dict[str, Any]:
    """The model's workflow over the whole span; its analysis records run on the stitched predictions."""
    span = Segments(folds[0].train, folds[0].valid, (folds[0].test[0], folds[-1].test[1]))
    return _on_segments(model_workflow(entry, cfg.seeds[0], cfg.data, threads), span)


def _digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:10]


def _plan(
    cfg: EvalConfig, out: Path, threads: int, folds: list[Segments], selected: list[int], provider: Path
) -> tuple[list[FoldRun], list[Span]]:
    digests = {provider: provider_digest(provider)}
    runs: list[FoldRun] = []
    spans: list[Span] = []
    for group, entries in (("model", cfg.models), ("ablation", cfg.ablations)):
        for entry in entries:
            by_seed = []
            for seed in cfg.seeds:
                mine = []
                for k in selected:
                    config = _fold_workflow(entry, seed, cfg, folds[k], threads)
                    run_dir = run_folder(out / "runs" / entry.slug, f"fold{k:02d}_seed{seed}", config, threads)
                    sha = _provider_digest(entry, provider_path(config), provider, digests)
                    prepared = out / "prepared" / f"handler_{handler_key(config, sha)}.pkl"
                    mine.append(FoldRun(group, entry, seed, k, config, run_dir, prepared))
                runs += mine
                by_seed.append(mine)
            spans += _spans(group, entry.name, entry, by_seed, out / "spans" / entry.slug)
    return runs, spans


def _provider_digest(entry: ModelEntry, own: Path, first: Path, digests: dict[Path, str]) -> str:
    """The digest of the provider ``entry`` reads, once per provider; one on another calendar than the
    first model's is refused, since the folds were cut on that calendar."""
    if own not in digests:
        if not read_calendar(own).equals(read_calendar(first)):
            raise ValueError(
                f"{entry.name}: its provider {own} has another calendar than {first}, on which the folds are cut; "
                "ingest both universes over the same sessions."
            )
        digests[own] = provider_digest(own)
    return digests[own]


def _spans(
    group: str,
    name: str,
    entry: ModelEntry,
    by_seed: list[list[FoldRun]],
    parent: Path,
    trained: list[list[FoldRun]] | None = None,
) -> list[Span]:
    """A row's span per seed, and its ensemble when there are several seeds; ``trained``: the runs
    each seed paid for, when more than those stitched."""
    trained = trained or by_seed
    rows = [(mine[0].seed, mine, paid) for mine, paid in zip(by_seed, trained, strict=True)]
    if len(by_seed) > 1:
        rows.append((ENSEMBLE, [r for mine in by_seed for r in mine], [r for paid in trained for r in paid]))
    return [
        Span(
            group,
            name,
            entry,
            seed,
            tuple(mine),
            parent / f"{_tag(seed)}_{_digest([r.run_dir.name for r in mine])}",
            tuple(paid),
        )
        for seed, mine, paid in rows
    ]


def _tag(seed: int | str) -> str:
    return ENSEMBLE if seed == ENSEMBLE else f"seed{seed}"


def _selection_spans(
    cfg: EvalConfig, runs: list[FoldRun], folds: list[Segments], out: Path
) -> tuple[list[Span], pd.DataFrame, pd.DataFrame]:
    """Each selection's spans, from the candidate chosen per seed and fold (the fits are done); the
    choices per seed and fold; and per seed what a past-folds selection recommends after the record."""
    spans: list[Span] = []
    choices, recommended = [], []
    entries = {e.name: e for e in cfg.entries}
    for name, selection in cfg.selections.items():
        by_seed, trained = [], []
        for seed in cfg.seeds:
            mine = {c: {r.fold: r for r in runs if r.entry.name == c and r.seed == seed} for c in selection.candidates}
            if selection.rule == "valid":
                valid = {c: {k: kept_valid_rank_ic(r.run_dir) for k, r in f.items()} for c, f in mine.items()}
                chosen = choose_on_valid(pd.DataFrame(valid).sort_index(), f"selection {name!r}, seed {seed}")
            else:
                chosen, after = _choose_on_past_folds(mine, folds)
                recommended.append({"selection": name, "seed": seed, "chosen": after})
            by_seed.append([mine[c][k] for k, c in chosen.items()])
            trained.append([r for f in mine.values() for r in f.values()])
            choices += [{"selection": name, "seed": seed, "fold": k, "chosen": c} for k, c in chosen.items()]
        first = entries[selection.candidates[0]]
        spans += _spans("selection", name, first, by_seed, out / "spans" / slug(name), trained)
    return spans, pd.DataFrame(choices, columns=CHOICE_COLUMNS), pd.DataFrame(recommended, columns=RECOMMENDED_COLUMNS)


def _choose_on_past_folds(runs: dict[str, dict[int, FoldRun]], folds: list[Segments]) -> tuple[pd.Series, str]:
    """Per fold run, the candidate with the best record before it (cut at the end of the fold's valid
    segment, the last day whose label is known when its test period starts); and the choice on the
    whole record, the candidate it recommends for what comes after."""
    daily = pd.DataFrame(
        {c: pd.concat([read_rank_ic(r.run_dir) for _, r in sorted(f.items())]) for c, f in runs.items()}
    )
    cutoffs = pd.Series({k: folds[k].valid[1] for k in sorted(next(iter(runs.values())))})
    after = choose_on_past_folds(daily, pd.Series({"after": daily.index.max()}))
    return choose_on_past_folds(daily, cutoffs), after["after"]


def _select(folds: list[Segments], wanted: list[int] | None) -> list[int]:
    if wanted is None:
        return list(range(len(folds)))
    bad = [k for k in wanted if not 0 <= k < len(folds)]
    if bad or len(set(wanted)) != len(wanted):
        raise ValueError(f"--folds {wanted}: the config has folds 0..{len(folds) - 1}, each named once.")
    return sorted(wanted)


def _planned(
    cfg: EvalConfig, out: Path, threads: int, wanted_folds: list[int] | None
) -> tuple[dict[str, Any], list[Segments], list[int], list[FoldRun], list[Span]]:
    """The first model's workflow, the folds, those selected, and every run and span they make."""
    assert cfg.rolling is not None
    first = model_workflow(cfg.models[0], cfg.seeds[0], cfg.data, threads)
    horizon = label_horizon(handler_kwargs(first).get("label", "qlib"))
    if cfg.rolling.embargo < horizon:
        raise ValueError(
            f"rolling.embargo {cfg.rolling.embargo} is shorter than the label's horizon ({horizon} sessions): "
            "train labels would read valid prices."
        )
    provider = provider_path(first)
    folds = rolling_folds(cfg.rolling, read_calendar(provider))
    selected = _select(folds, wanted_folds)
    runs, spans = _plan(cfg, out, threads, folds, selected, provider)
    return first, folds, selected, runs, spans


def plan_walk_forward(
    cfg: EvalConfig, out: str | Path, threads: int, wanted_folds: list[int] | None = None
) -> pd.DataFrame:
    """What :func:`run_walk_forward` would train and reuse, per model (see :func:`run_plan`); runs nothing."""
    runs = _planned(cfg, Path(out), threads, wanted_folds)[3]
    return run_plan([(r.entry.name, r.run_dir) for r in runs])


def run_walk_forward(
    cfg: EvalConfig,
    out: str | Path,
    executor: Executor,
    threads: int,
    wanted_folds: list[int] | None = None,
    tables_dir: str | Path | None = None,
) -> str:
    """Prepare, fit and analyse every (model, seed, fold) on ``executor``; write the tables to
    ``tables_dir`` (default ``out``) and return them."""
    out = Path(out)
    tables_dir = Path(tables_dir or out)
    first, folds, selected, runs, spans = _planned(cfg, out, threads, wanted_folds)
    tables_dir.mkdir(parents=True, exist_ok=True)

    pending = [r for r in runs if not qrun_finished(r.run_dir)]
    unique = {r.prepared: r.config for r in pending if not r.prepared.is_file()}
    prepare = [
        Task(f"prepare {p.name}", prepare_handler, {"config": c, "target": str(p)}, threads, str(p.with_suffix(".log")))
        for p, c in unique.items()
    ]
    log.info(
        "%d folds x %d models x %d seeds: %d runs (%d finished before), %d fold handlers to prepare",
        len(selected), len(cfg.entries), len(cfg.seeds), len(runs), len(runs) - len(pending), len(prepare),
    )  # fmt: skip
    run_all(executor, prepare)
    fit = [Task(r.name, run_workflow, _fit_kwargs(r), threads) for r in pending]
    run_all(executor, fit)

    chosen_spans, choices, recommended = _selection_spans(cfg, runs, folds, out)
    spans += chosen_spans
    analysis = {s.name: _span_workflow(s.entry, cfg, [folds[k] for k in selected], threads) for s in spans}
    todo = [s for s in spans if not span_finished(s.span_dir)]
    run_all(executor, [_span_task(s, analysis[s.name], threads) for s in todo])

    results, series = _results(cfg, spans, tables_dir)
    family = _family_test(series, cfg.baseline_name)
    atomic_write_text(tables_dir / "results.csv", results.to_csv(index=False))
    described = describe(cfg, first, threads) | {
        "rolling": {k: str(v) for k, v in vars(cfg.rolling).items()},
        "folds": [{"fold": k} | folds[k].to_config() for k in selected],
        "baseline": cfg.baseline_name,
        "selections": {name: vars(selection) for name, selection in cfg.selections.items()},
        "chosen": choices.to_dict("records"),
        "recommended": recommended.to_dict("records"),
        "family": family.to_dict() if family else None,
        "trained_on": _trained_on({r.run_dir: r for s in spans for r in s.trained}.values()),
    }
    atomic_write_text(tables_dir / "evaluate.json", json.dumps(described, indent=2, default=str))
    tables = format_walk_forward_tables(results, described, _fold_rank_ic(series, folds, selected), choices, family)
    atomic_write_text(tables_dir / "tables.md", tables)
    return tables


def _fit_kwargs(run: FoldRun) -> dict[str, Any]:
    return {"config": with_prepared_handler(run.config, run.prepared, run.run_dir), "run_dir": str(run.run_dir)}


def _span_task(span: Span, analysis: dict[str, Any], threads: int) -> Task:
    seeds = sorted({r.seed for r in span.runs})
    by_seed = [[str(r.run_dir) for r in span.runs if r.seed == s] for s in seeds]
    records = [r for r in analysis["task"]["record"] if not is_signal_record(r)]
    kwargs = {
        "seeds_fold_runs": by_seed,
        "span_dir": str(span.span_dir),
        "qlib_init": analysis["qlib_init"],
        "records": records,
    }
    log = span.span_dir.with_name(span.span_dir.name + ".log")  # beside: a rebuilt span folder starts empty
    return Task(f"span {span.name} {span.seed}", analyse_span, kwargs, threads, str(log))


def _results(
    cfg: EvalConfig, spans: list[Span], tables_dir: Path
) -> tuple[pd.DataFrame, dict[tuple[str, int | str], SpanSeries]]:
    """One row per span: where it is (relative to ``tables_dir``, where the rows are written), its metrics,
    its significance against the baseline's span of the same seed, on the test days and on the valid folds."""
    series = {(s.name, s.seed): read_span_series(s.span_dir) for s in spans}
    valid = {(s.name, s.seed): kept_valid({(r.seed, r.fold): r.run_dir for r in s.runs}) for s in spans}
    rows = []
    for s in spans:
        against = s.name != cfg.baseline_name and (cfg.baseline_name, s.seed) in series
        baseline = series[cfg.baseline_name, s.seed] if against else None
        metrics = latest_metrics(s.span_dir)
        where = os.path.relpath(s.span_dir.resolve(), tables_dir.resolve())
        rows.append(
            {"group": s.group, "model": s.name, "seed": str(s.seed), "span": where}
            | {"folds": len({r.fold for r in s.runs}), "compute_s": sum(qrun_wall(r.run_dir) for r in s.trained)}
            | {"trained_on": "; ".join(f"{cpu} ({n})" for cpu, n in _trained_on(s.trained).items())}
            | {"valid.RankIC": valid[s.name, s.seed].mean()}
            | metrics.to_dict()
            | compare(series[s.name, s.seed], baseline)
            | (valid_difference(valid[s.name, s.seed], valid[cfg.baseline_name, s.seed]) if against else {})
        )
    return pd.DataFrame(rows), series


def _trained_on(runs: Iterable[FoldRun]) -> dict[str, int]:
    """How many of ``runs`` each CPU trained ("unrecorded": runs finished before runs named their machine);
    why that matters: :func:`storm_bt.io.machine`."""
    return dict(Counter((qrun_machine(r.run_dir) or {}).get("cpu", "unrecorded") for r in runs))


def _per_model(series: dict[tuple[str, int | str], SpanSeries]) -> dict[str, SpanSeries]:
    """Each model's ensemble span, or its one seed's."""
    return {model: s for (model, seed), s in series.items() if seed == ENSEMBLE or (model, ENSEMBLE) not in series}


def _family_test(series: dict[tuple[str, int | str], SpanSeries], baseline: str) -> FamilyTest | None:
    """Every other model against the baseline as one family; None without a baseline or two others."""
    per_model = _per_model(series)
    if baseline not in per_model or len(per_model) < 3:
        return None
    others = pd.DataFrame({m: s.rank_ic for m, s in per_model.items() if m != baseline})
    return family_test(per_model[baseline].rank_ic, others)


def _fold_rank_ic(
    series: dict[tuple[str, int | str], SpanSeries], folds: list[Segments], selected: list[int]
) -> pd.DataFrame:
    """Mean daily RankIC of each model (its ensemble, or its one seed) within each fold's test period."""
    periods = {f"{folds[k].test[0]:%Y-%m-%d}": folds[k].test for k in selected}
    table = {
        model: {label: s.rank_ic.loc[start:end].mean() for label, (start, end) in periods.items()}
        for model, s in _per_model(series).items()
    }
    return pd.DataFrame(table).T


def _cells(rows: pd.DataFrame, columns: dict[str, str], digits: dict[str, int]) -> list[str]:
    return [mean_std(rows[c], digits.get(c, 4)) if c in rows else "n/a" for c in columns.values()]


def _interval(row: pd.Series) -> str:
    if pd.isna(row.get("diff.ASR")):
        return "n/a"
    return f"{row['diff.ASR']:.3f} [{row['diff.ASR.low']:.3f}, {row['diff.ASR.high']:.3f}]"


def format_walk_forward_tables(
    results: pd.DataFrame,
    described: dict[str, Any],
    fold_rank_ic: pd.DataFrame,
    choices: pd.DataFrame | None = None,
    family: FamilyTest | None = None,
) -> str:
    """Markdown: factor quality with t-stats and differences against the baseline, the models as a
    family against it, the TopK-Drop portfolio over the span with the Sharpe difference interval,
    RankIC per fold, and what each selection chose."""
    data, rolling = described["data"], described["rolling"]
    folds, baseline = described["folds"], described["baseline"]
    span = (folds[0]["test"][0], folds[-1]["test"][1])
    lines = [
        f"Walk-forward: {len(folds)} folds, step {rolling['step']}, {rolling['window']} train window, valid "
        f"{rolling['valid_sessions']} sessions, embargo {rolling['embargo']} sessions; out of sample {span[0]} .. "
        f"{span[1]}. Each fold's model is trained on its train segment, selected on its valid segment and "
        "scores only its test period; the test periods are stitched and analysed once.",
        *described_lines(
            described,
            f"Data: {data['market']} ({data['instruments']} instruments) from {data['provider_uri']}; first fold "
            f"trains {folds[0]['train'][0]} .. {folds[0]['train'][1]}.",
            f"Seeds: {described['seeds']} ({described['threads_per_run']} thread(s) per run); overrides of the "
            f"workflows: {described['overrides'] or 'none'}. Rows 'seeds' are mean ± std over the seeds' own spans; "
            "'ensemble' is one span of the mean of the seeds' standardised scores.",
        ),
    ]
    machines = described["trained_on"]
    trained_on = "Trained on: " + ", ".join(f"{cpu} ({n} runs)" for cpu, n in machines.items()) + "."
    if len(machines) > 1:
        trained_on += " CPUs round floats differently and training amplifies it: compare models trained on one."
    lines += [trained_on, ""]
    lines += [method_note(int(results["RankIC.days"].max()), baseline), ""]
    groups = list(results.groupby(["model"], sort=False))
    factor = {"valid Rank IC": "valid.RankIC", "Rank IC": "Rank IC", "t": "RankIC.t", "Rank ICIR": "Rank ICIR",
              "IC": "IC", f"Δ Rank IC vs {baseline}": "diff.RankIC", "t (Δ)": "diff.RankIC.t"}  # fmt: skip
    on_valid = {f"Δ valid Rank IC vs {baseline}": "diff.valid.RankIC", "t over folds (Δ valid)": "diff.valid.RankIC.t"}
    digits = {"RankIC.t": 2, "diff.RankIC.t": 2, "diff.valid.RankIC.t": 2}
    header = [*factor, "t over seeds (Δ)", *on_valid]
    lines += ["## Factor quality (out of sample, whole span)", "", "| model | " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * (len(header) + 1))
    for (model,), rows in groups:
        seeds = rows[rows["seed"] != ENSEMBLE]
        over_seeds = replicate_t(seeds["diff.RankIC"])
        cells = [*_cells(seeds, factor, digits), "n/a" if np.isnan(over_seeds) else f"{over_seeds:.2f}"]
        cells += _cells(seeds, on_valid, digits)
        lines.append(f"| {model}, seeds (n={len(seeds)}) | " + " | ".join(cells) + " |")
        for _, row in rows[rows["seed"] == ENSEMBLE].iterrows():
            cells = [*_cells(row.to_frame().T, factor, digits), "", *_cells(row.to_frame().T, on_valid, digits)]
            lines.append(f"| {model}, ensemble | " + " | ".join(cells) + " |")
    if family is not None:
        lines += ["", *format_family_test(family, baseline)]
    portfolio = {m: f"paper.{m}" for m in PM}
    lines += ["", "## TopK-Drop portfolio (out of sample, whole span, net of costs)", ""]
    lines += ["| model | " + " | ".join(portfolio) + f" | Δ ASR vs {baseline} [95% CI] |", "|" + "---|" * (len(PM) + 2)]
    for (model,), rows in groups:
        seeds = rows[rows["seed"] != ENSEMBLE]
        interval = mean_std(seeds["diff.ASR"], 3) if seeds["diff.ASR"].notna().any() else "n/a"
        lines.append(
            f"| {model}, seeds (n={len(seeds)}) | " + " | ".join(_cells(seeds, portfolio, {})) + f" | {interval} |"
        )
        for _, row in rows[rows["seed"] == ENSEMBLE].iterrows():
            cells = _cells(row.to_frame().T, portfolio, {})
            lines.append(f"| {model}, ensemble | " + " | ".join(cells) + f" | {_interval(row)} |")
    market = [mean_std(results[f"paper.market.{m}"].iloc[:1]) if f"paper.market.{m}" in results else "n/a" for m in PM]
    lines += [f"| market ({data['benchmark']}) | " + " | ".join(market) + " | |", ""]
    lines += ["## Rank IC per fold (test period; the ensemble, or the one seed)", ""]
    lines += ["| model | " + " | ".join(fold_rank_ic.columns) + " |", "|" + "---|" * (len(fold_rank_ic.columns) + 1)]
    for model, row in fold_rank_ic.iterrows():
        lines.append(f"| {model} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    if choices is not None and len(choices):
        labels = {f["fold"]: f["test"][0] for f in folds}
        candidates = {name: s["candidates"] for name, s in described["selections"].items()}
        recommended = pd.DataFrame(described.get("recommended", []), columns=RECOMMENDED_COLUMNS)
        lines += ["", *format_choices(choices, candidates, labels, recommended)]
    return "\n".join([*lines, ""])
