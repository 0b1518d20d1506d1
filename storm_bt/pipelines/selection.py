"""Choosing among models on each fold's valid segment, evaluated like a model of its own.

A variant that raises the valid Rank IC is not thereby better out of sample: the valid year is also
where each run picked its epoch. A ``selections:`` entry of a walk-forward evaluation turns "keep
whatever scores best on valid" into a procedure the test years can judge: per seed and fold, the
candidate whose run kept the highest valid Rank IC supplies that fold's test predictions, and the
stitched span gets its own row, tested against the baseline like every model. No test date enters
a choice, so the row is out of sample (a nested selection).
"""

from __future__ import annotations

import pandas as pd

__all__ = ["choose_on_valid", "format_choices"]


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


def format_choices(choices: pd.DataFrame, candidates: dict[str, list[str]], fold_labels: dict[int, str]) -> list[str]:
    """Markdown: for each selection, how many seeds chose each of its candidates in each fold.

    :param choices: one row per (selection, seed, fold) with the ``chosen`` candidate.
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
        lines.append("")
    return lines
