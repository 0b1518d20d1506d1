"""The models of an evaluation as a family: Hansen's SPA and Romano-Wolf's StepM find a real edge,
see none in a family of placebos, and count the search that a lone t-stat ignores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from storm_bt.metrics import mean_test
from storm_bt.pipelines.significance import BOOTSTRAP
from storm_bt.pipelines.snooping import MIN_BLOCKS, family_from_results, family_test, format_family_test

DAYS = 2000
NOISE = 0.2  # daily Rank IC's spread across days on DJ30 is about this


def _family(edges: dict[str, float], seed: int = 0) -> tuple[pd.Series, pd.DataFrame]:
    """A baseline's daily Rank IC and models that add ``edge`` to it, each with its own noise."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2012-01-02", periods=DAYS)
    baseline = pd.Series(rng.normal(0.0, NOISE, DAYS), index=days)
    models = pd.DataFrame({m: baseline + edge + rng.normal(0.0, NOISE, DAYS) for m, edge in edges.items()})
    return baseline, models


def test_a_real_edge_is_found_and_named():
    baseline, models = _family({"skilled": 0.03} | {f"placebo {k}": 0.0 for k in range(5)})
    test = family_test(baseline, models)
    assert test.models == 6 and test.days == DAYS
    assert test.best == "skilled" and test.best_diff == pytest.approx((models["skilled"] - baseline).mean())
    assert test.p_consistent < 0.01
    assert test.superior == ("skilled",)
    assert test.p_lower <= test.p_consistent <= test.p_upper


def test_a_family_of_placebos_beats_nothing():
    baseline, models = _family({f"placebo {k}": 0.0 for k in range(10)}, seed=1)
    test = family_test(baseline, models)
    assert test.p_consistent > 0.2
    assert test.superior == ()


def test_the_search_costs_what_a_lone_t_stat_ignores():
    """Twenty placebos: the best of them, alone, reads as significant; as the best of twenty it is not,
    and beside a single other placebo it still would be."""
    baseline, models = _family({f"placebo {k}": 0.0 for k in range(20)}, seed=2)
    best = models.sub(baseline, axis=0).mean().idxmax()
    assert mean_test(models[best] - baseline).t > 2.0  # the lone paired t-stat
    other = next(m for m in models if m != best)
    assert family_test(baseline, models[[best, other]]).p_consistent < 0.05
    everyone = family_test(baseline, models)
    assert everyone.best == best and everyone.p_consistent > 0.1
    assert everyone.superior == ()


def test_days_missing_for_one_model_are_dropped_for_all_and_a_short_span_gives_no_test():
    baseline, models = _family({"a": 0.0, "b": 0.0})
    models.iloc[:100, 1] = np.nan
    assert family_test(baseline, models).days == DAYS - 100
    short = MIN_BLOCKS * BOOTSTRAP["block"] - 1
    assert family_test(baseline.iloc[:short], models.iloc[:short]) is None


def test_a_family_of_one_is_refused_naming_the_model():
    baseline, models = _family({"alone": 0.0})
    with pytest.raises(ValueError, match=r"at least 2 models.*'alone'"):
        family_test(baseline, models)


def test_the_table_states_the_p_value_and_the_models_found():
    baseline, models = _family({"skilled": 0.03, "placebo": 0.0})
    test = family_test(baseline, models)
    text = "\n".join(format_family_test(test, "LightGBM"))
    assert f"**{test.p_consistent:.3f}**" in text and "2 models against LightGBM" in text
    assert "at a 5% family-wise error rate: skilled." in text
    assert f"mean block {BOOTSTRAP['block']} sessions" in text


def _results_csv(tmp_path, name: str, rows: list[dict]) -> str:
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def _row(model: str, seed: str = "ensemble", folds: int = 10, span: str = "nowhere") -> dict:
    return {"model": model, "seed": seed, "folds": folds, "span": span}


@pytest.mark.parametrize(
    ("rows", "baseline", "error", "message"),
    [
        ([{"model": "a", "seed": "0"}], "a", ValueError, r"lacks the column\(s\) \['folds', 'span'\]"),
        ([_row("a"), _row("b"), _row("c")], "LightGBM", LookupError, r"'LightGBM' is in none.*'a', 'b', 'c'"),
        ([_row("a"), _row("b", seed="0"), _row("b", seed="1")], "a", ValueError, r"'b' has 2 seeds and no ensemble"),
        ([_row("a"), _row("b", folds=3), _row("c")], "a", ValueError, r"covers 10 folds.*'b': '3 in"),
        ([_row("a"), _row("b"), _row("c")], "a", FileNotFoundError, r"the span of 'a' is not at \S*/nowhere\."),
    ],
)
def test_a_results_file_that_cannot_give_a_family_is_refused_naming_why(tmp_path, rows, baseline, error, message):
    with pytest.raises(error, match=message):
        family_from_results([_results_csv(tmp_path, "results.csv", rows)], baseline)
