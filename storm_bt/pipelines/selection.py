"""Choosing among models per fold, evaluated like a model of its own.

A variant that raises the valid Rank IC is not thereby better out of sample: the valid year is also
where each run picked its epoch. A ``selections:`` entry of a walk-forward evaluation turns a way of
choosing into a procedure the test years can judge: per seed and fold, the chosen candidate supplies
that fold's test predictions, and the stitched span gets its own row, tested against the baseline
like every model. Two rules:

- ``valid``: the candidate whose run kept the highest valid Rank IC in that fold;
- ``past_folds``: the candidate with the highest mean daily Rank IC over the earlier folds' test
  periods, on the days whose labels are known when the fold's test period starts (up to the end of
  its valid segment); the first fold has no record and takes the first candidate listed. This is
  how a researcher picks a configuration from its walk-forward record, and its last choice (on the
  whole record) is what that record recommends next.

No test date of a fold enters its own choice, so the rows are out of sample (nested selections).
"""

from __future__ import annotations

import pandas as pd

__all__ = ["choose_on_past_folds", "choose_on_valid", "format_choices"]


def choose_on_valid(valid_rank_ic: pd.DataFrame, where: str) -> pd.Series:
    """Per fold (row), the candidate (column) with the highest valid Rank IC; a tie goes to the
    candidate listed first, a NaN is never chosen. A fold where no candidate has a valid Rank IC
    cannot be decided and is refused, naming ``where`` and the fold."""
    undecided = valid_rank_ic.index[valid_rank_ic.isna().all(axis=1)]
    if len(undecided):
        raise ValueError(
            f"{where}: no candidate has a valid Rank IC in fold(s) {list(undecided)} "
            f"(candidates {list(valid_rank_ic.columns)}); only models that record one per epoch "
            "(storm_bt's) can be chosen on valid."
        )
    return valid_rank_ic.idxmax(axis=1, skipna=True)


def choose_on_past_folds(daily_rank_ic: pd.DataFrame, cutoffs: pd.Series) -> pd.Series:
    """Per fold, the candidate (column) with the highest mean Rank IC on the days up to the fold's
    cutoff that every candidate has; a tie goes to the candidate listed first, and a fold with no such
    day (the first) takes the first candidate.

    :param daily_rank_ic: days x candidates: each candidate's daily Rank IC over the folds' test periods.
    :param cutoffs: fold -> the last day whose label is known before the fold's test period starts.
    """
    record = daily_rank_ic.dropna().sort_index()
    chosen = {}
    for fold, cutoff in cutoffs.items():
        known = record.loc[:cutoff]
        chosen[fold] = known.mean().idxmax() if len(known) else daily_rank_ic.columns[0]
    return pd.Series(chosen, dtype=object)


def format_choices(
    choices: pd.DataFrame,
    candidates: dict[str, list[str]],
    fold_labels: dict[int, str],
    recommended: pd.DataFrame | None = None,
) -> list[str]:
    """Markdown: for each selection, how many seeds chose each of its candidates in each fold, and
    (past-folds rule) how many the whole record recommends for after it.

    :param choices: one row per (selection, seed, fold) with the ``chosen`` candidate.
    :param recommended: one row per (selection, seed) with the ``chosen`` candidate, past-folds selections only.
    """
    lines: list[str] = []
    for selection, rows in choices.groupby("selection", sort=False):
        counts = pd.crosstab(rows["chosen"], rows["fold"])
        counts = counts.reindex(index=candidates[selection], columns=sorted(fold_labels), fill_value=0)
        seeds = rows["seed"].nunique()
        lines += [f"## {selection}: candidates chosen per fold (of {seeds} seed(s))", ""]
        lines += ["| candidate | " + " | ".join(fold_labels[k] for k in counts.columns) + " |"]
        lines.append("|" + "---|" * (len(counts.columns) + 1))
        for candidate, row in counts.iterrows():
            lines.append(f"| {candidate} | " + " | ".join(str(int(n)) for n in row) + " |")
        after = recommended[recommended["selection"] == selection] if recommended is not None else []
        if len(after):
            votes = after["chosen"].value_counts().reindex(candidates[selection]).dropna().astype(int)
            lines += [
                "",
                "Recommended after the record (chosen on all of it): "
                + ", ".join(f"{candidate} ({n} of {seeds} seed(s))" for candidate, n in votes.items())
                + ".",
            ]
        lines.append("")
    return lines
