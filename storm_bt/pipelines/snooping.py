"""The models of one evaluation as a family: does any of them beat the baseline once the search is counted?

A researcher who tries many configurations on one walk-forward record and keeps the best reads its
paired t-stat as if it had been the only one tried; the best of many noisy differences is biased up.
Hansen's (2005) test of Superior Predictive Ability asks instead whether *any* model of the family
beats the baseline, with the family's maximum studentised difference as the statistic and its null
distribution from a stationary block bootstrap of the days (``arch.bootstrap.SPA``); Romano and
Wolf's (2005) stepwise test names the models that do, controlling the family-wise error rate
(``arch.bootstrap.StepM``). Both read each model's daily Rank IC against the baseline's on the days
they all have: the ensemble's span, or a model's one seed.

Inside a walk-forward evaluation the family is what that evaluation lists. A search spread over many
evaluations (each variant run on its own, some at model code since changed) is tested from their
``results.csv`` files with ``storm-bt family`` (:func:`family_from_results`): the spans they recorded
are read back, so nothing is retrained. Beside the test, the same models on the valid folds: each one's
kept valid Rank IC against the baseline's run of the same seed and fold, which is what choosing a
configuration on valid folds would read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from arch.bootstrap import SPA, StepM

from storm_bt.pipelines.significance import BOOTSTRAP, ENSEMBLE, kept_valid, read_span_series, valid_difference
from storm_bt.workflows.span import span_runs

__all__ = ["FamilyTest", "family_from_results", "family_test", "format_family_test", "format_valid_record"]

RESULTS_COLUMNS = ("model", "seed", "folds", "span")  # what a walk-forward results.csv must give per row

SIZE = 0.05
"""The family-wise error rate of the stepwise test."""

MIN_BLOCKS = 10
"""Fewer shared days than this many bootstrap blocks give no family test."""


@dataclass(frozen=True)
class FamilyTest:
    """Hansen's SPA p-values and Romano-Wolf's superior models for a family against one baseline."""

    models: int
    days: int
    best: str  # the model with the largest mean daily Rank IC difference
    best_diff: float
    p_consistent: float  # Hansen's recommended p-value (the null's poor models recentred by a threshold)
    p_lower: float  # models worse than the baseline set aside entirely: liberal
    p_upper: float  # the least favourable configuration (every difference zero): conservative
    superior: tuple[str, ...]  # the models StepM finds better than the baseline at SIZE, best first

    def to_dict(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


def family_test(baseline: pd.Series, models: pd.DataFrame) -> FamilyTest | None:
    """SPA and StepM of ``models`` (days x model: daily Rank IC) against ``baseline`` (daily Rank IC).

    Only days where the baseline and every model have a value count; None when they are fewer than
    MIN_BLOCKS bootstrap blocks (a screening span). Refused with fewer than two models: a family of
    one is the paired t-test.
    """
    if models.shape[1] < 2:
        raise ValueError(f"A family test needs at least 2 models beside the baseline, got {list(models.columns)}.")
    shared = models.dropna().index.intersection(baseline.dropna().index)  # by index: any model name works
    if len(shared) < MIN_BLOCKS * BOOTSTRAP["block"]:
        return None
    days, base = models.loc[shared], baseline.loc[shared]
    ranked = days.sub(base, axis=0).mean().sort_values(ascending=False)
    # arch's tests rank losses (lower is better): the negative Rank IC.
    settings = {"block_size": BOOTSTRAP["block"], "reps": BOOTSTRAP["reps"], "bootstrap": "stationary"}
    spa = SPA(-base, -days, seed=BOOTSTRAP["seed"], **settings)
    spa.compute()
    stepm = StepM(-base, -days, size=SIZE, seed=BOOTSTRAP["seed"], **settings)
    stepm.compute()
    return FamilyTest(
        models=days.shape[1],
        days=len(days),
        best=str(ranked.index[0]),
        best_diff=float(ranked.iloc[0]),
        p_consistent=float(spa.pvalues["consistent"]),
        p_lower=float(spa.pvalues["lower"]),
        p_upper=float(spa.pvalues["upper"]),
        superior=tuple(m for m in ranked.index if m in set(stepm.superior_models)),
    )


def format_family_test(test: FamilyTest, baseline: str) -> list[str]:
    """Markdown: the family's SPA p-value and StepM's superior models, with the method."""
    b = BOOTSTRAP
    superior = ", ".join(test.superior) if test.superior else "none"
    return [
        "## The models as a family (the search counted)",
        "",
        f"{test.models} models against {baseline} on the {test.days} days they all have (each model's ensemble, "
        f"or its one seed). Best mean Δ Rank IC: {test.best} ({test.best_diff:+.4f}). Hansen's SPA p-value that "
        f"no model beats {baseline}: **{test.p_consistent:.3f}** (consistent; lower {test.p_lower:.3f}, upper "
        f"{test.p_upper:.3f}). Better than {baseline} by Romano-Wolf's StepM at a {SIZE:.0%} family-wise error "
        f"rate: {superior}.",
        "",
        "The t-stats above test each model alone; keeping the best of these models and quoting its t ignores the "
        "search, this does not (over the models listed here only). Studentised differences of daily Rank "
        f"IC, stationary block bootstrap (mean block {b['block']} sessions, {b['reps']} resamples, seed {b['seed']}).",
    ]


def family_from_results(paths: Sequence[str | Path], baseline: str) -> tuple[FamilyTest, pd.DataFrame, dict[str, Path]]:
    """The family test of every model in walk-forward ``results.csv`` files against ``baseline``, from the
    spans the files recorded (each model's ensemble, or its one seed); the models on the valid folds
    (:func:`format_valid_record`); and which file each model came from.

    A model named in several files is taken from the last one given. Every model must cover as many
    folds as the baseline: a screening run over fewer folds would cut every model's days to its own.
    Span paths are read relative to their results file (older files: to the folder the evaluation ran in).
    """
    rows: dict[str, tuple[pd.DataFrame, Path]] = {}
    for path in map(Path, paths):
        table = pd.read_csv(path, dtype={"seed": str})
        missing = [c for c in RESULTS_COLUMNS if c not in table]
        if missing:
            raise ValueError(f"{path}: not a walk-forward results.csv, it lacks the column(s) {missing}.")
        table["span"] = [_span_dir(recorded, path) for recorded in table["span"]]
        for model, runs in table.groupby("model", sort=False):
            if (runs["seed"] == ENSEMBLE).sum() == 0 and len(runs) > 1:
                raise ValueError(f"{path}: model {model!r} has {len(runs)} seeds and no ensemble row.")
            rows[str(model)] = (runs, path)
    if baseline not in rows:
        raise LookupError(f"Baseline {baseline!r} is in none of {[str(p) for p in paths]}; models: {sorted(rows)}.")
    whole = {m: _whole_span(runs) for m, (runs, _) in rows.items()}
    folds = whole[baseline]["folds"]
    short = {m: f"{r['folds']} in {rows[m][1]}" for m, r in whole.items() if r["folds"] != folds}
    if short:
        raise ValueError(f"The baseline {baseline!r} covers {folds} folds; these models do not: {short}.")
    for model, (runs, path) in rows.items():
        absent = [span for span in runs["span"] if not span.is_dir()]
        if absent:
            raise FileNotFoundError(f"{path}: the span of {model!r} is not at {absent[0]}.")
    series = {model: read_span_series(row["span"]).rank_ic for model, row in whole.items()}
    others = pd.DataFrame({m: s for m, s in series.items() if m != baseline})
    test = family_test(series[baseline], others)
    if test is None:
        raise ValueError(f"The models share fewer than {MIN_BLOCKS * BOOTSTRAP['block']} days: no family test.")
    valid = {model: _kept_valid(runs) for model, (runs, _) in rows.items()}
    record = pd.DataFrame(
        {
            m: {"valid.RankIC": v.mean()} | valid_difference(v, valid[baseline])
            for m, v in valid.items()
            if m != baseline
        }
    ).T
    return test, record, {m: p for m, (_, p) in rows.items()}


def _span_dir(recorded: str, results: Path) -> Path:
    """A span a results.csv names, relative to the file's folder (so an evaluation folder moves whole);
    files written before that name it from the folder the evaluation ran in, and are read so."""
    beside = results.parent / recorded
    return Path(recorded) if not beside.is_dir() and Path(recorded).is_dir() else beside


def _whole_span(runs: pd.DataFrame) -> pd.Series:
    """A model's row the family reads: its ensemble, or its one seed."""
    ensemble = runs[runs["seed"] == ENSEMBLE]
    return (ensemble if len(ensemble) else runs).iloc[0]


def _kept_valid(runs: pd.DataFrame) -> pd.Series:
    """The valid Rank IC each fold run of a model's seeds kept, indexed by (seed, fold): a seed's span lists its
    fold runs in date order, and every model covers the baseline's folds."""
    fold_runs = {}
    for _, row in runs[runs["seed"] != ENSEMBLE].iterrows():
        for fold, run_dir in enumerate(span_runs(row["span"])[0]):
            if not run_dir.is_dir():
                raise FileNotFoundError(f"The span {row['span']} was stitched from {run_dir}, which is not there.")
            fold_runs[row["seed"], fold] = run_dir
    return kept_valid(fold_runs)


def format_valid_record(record: pd.DataFrame, baseline: str) -> list[str]:
    """Markdown: the models on the valid folds against the baseline, best first."""
    lines = [
        "## The same models on the valid folds",
        "",
        f"The valid Rank IC each run kept, against {baseline}'s run of the same seed and fold; t over folds: "
        "one-sample t of the folds' mean Δ (a fold's seeds validate on the same year). Choosing a configuration "
        "on the valid folds reads this table, never the test days; n/a where a model keeps no valid Rank IC.",
        "",
        f"| model | valid Rank IC | Δ valid vs {baseline} | t over folds |",
        "|---|---|---|---|",
    ]
    for model, row in record.sort_values("diff.valid.RankIC", ascending=False, na_position="last").iterrows():
        cells = [
            _number(row["valid.RankIC"], 4),
            _number(row["diff.valid.RankIC"], 4, "+"),
            _number(row["diff.valid.RankIC.t"], 2),
        ]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _number(value: float, digits: int, sign: str = "") -> str:
    return "n/a" if pd.isna(value) else f"{value:{sign}.{digits}f}"
