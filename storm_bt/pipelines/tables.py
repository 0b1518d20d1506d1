"""Markdown tables of results over seeds: one cell format (``mean ± sample std``) for every table."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

__all__ = ["markdown_table", "mean_std"]


def mean_std(values: pd.Series, digits: int = 4) -> str:
    """``mean ± std`` (sample std, ddof 1) of the non-missing values; the value alone if one; ``n/a`` if none."""
    values = values.dropna()
    if values.empty:
        return "n/a"
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def markdown_table(
    results: pd.DataFrame,
    by: Sequence[str],
    columns: dict[str, str],
    count: bool = True,
    extra_rows: Sequence[Sequence[str]] = (),
) -> list[str]:
    """One row per group of ``results`` (runs over seeds), one ``mean ± std`` cell per column.

    :param by: the columns naming a row (``model``, or ``agent`` and ``engine``).
    :param columns: header -> column of ``results``; a column that is absent reads ``n/a``.
    :param count: append ``(n=runs)`` to the row's last name.
    :param extra_rows: rows given as cells (a market reference, say), appended as they are.
    """
    lines = ["| " + " | ".join([*by, *columns]) + " |", "|" + "---|" * (len(by) + len(columns))]
    for key, runs in results.groupby(list(by), sort=False):
        names = [str(k) for k in key]
        if count:
            names[-1] += f" (n={len(runs)})"
        cells = [mean_std(runs[c]) if c in runs else "n/a" for c in columns.values()]
        lines.append("| " + " | ".join([*names, *cells]) + " |")
    lines += ["| " + " | ".join(row) + " |" for row in extra_rows]
    return [*lines, ""]
