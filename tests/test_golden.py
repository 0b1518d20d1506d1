"""Golden-value comparison of the regression suite: a metric out of its band fails with a readable diff."""

from __future__ import annotations

import json
import math

import pytest

from storm_bt.io import machine
from storm_bt.pipelines.golden import MACHINE_KEY, compare, diff_table, recorded_elsewhere, refresh

GOLDEN = {
    "synth.topk.CW": {"value": 1.2345, "rel": 1e-9},
    "storm.Rank IC": {"value": 0.071, "abs": 0.02},
}


def test_values_inside_their_bands_pass() -> None:
    assert compare({"synth.topk.CW": 1.2345 * (1 + 5e-10), "storm.Rank IC": 0.085}, GOLDEN) == []


def test_a_perturbed_result_fails_with_a_diff_table() -> None:
    drifts = compare({"synth.topk.CW": 1.2345 * 1.01, "storm.Rank IC": 0.045}, GOLDEN)
    assert [d.metric for d in drifts] == ["storm.Rank IC", "synth.topk.CW"]
    table = diff_table(drifts).splitlines()
    assert table[0].split() == ["metric", "golden", "got", "delta", "tolerance"]
    rank_ic = table[2].split()
    assert rank_ic[:2] == ["storm.Rank", "IC"] and rank_ic[2:] == ["0.071", "0.045", "-0.026", "0.02"]
    cw = table[3].split()
    assert cw[0] == "synth.topk.CW" and float(cw[1]) == 1.2345 and float(cw[2]) == pytest.approx(1.246845)
    assert float(cw[4]) == pytest.approx(1.2345e-9, rel=1e-2)


def test_missing_and_nan_metrics_are_drifts() -> None:
    drifts = compare({"synth.topk.CW": math.nan, "new.metric": 1.0}, GOLDEN)
    by_name = {d.metric: d for d in drifts}
    assert set(by_name) == {"synth.topk.CW", "storm.Rank IC", "new.metric"}
    assert by_name["storm.Rank IC"].got is None and by_name["new.metric"].golden is None
    assert "missing" in diff_table(drifts)


def test_refresh_rewrites_values_and_keeps_bands(tmp_path) -> None:
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(GOLDEN))
    refresh(path, {"synth.topk.CW": 2.0, "storm.Rank IC": 0.05, "new.metric": 3.0}, {"rel": 1e-6})
    assert json.loads(path.read_text()) == {
        "new.metric": {"value": 3.0, "rel": 1e-6},
        "storm.Rank IC": {"value": 0.05, "abs": 0.02},
        "synth.topk.CW": {"value": 2.0, "rel": 1e-9},
    }


def test_values_bound_to_a_machine_record_it_and_compare_only_the_metrics(tmp_path) -> None:
    path = tmp_path / "golden.json"
    refresh(path, {"storm.IC": 0.05}, {"abs": 1e-6}, recorded_on=machine())
    golden = json.loads(path.read_text())
    assert golden[MACHINE_KEY] == machine() and set(machine()) == {"cpu", "torch", "numpy"}
    assert compare({"storm.IC": 0.05}, golden) == []
    assert [d.metric for d in compare({"storm.IC": 0.06}, golden)] == ["storm.IC"]
    assert recorded_elsewhere(path) is None
    path.write_text(json.dumps(golden | {MACHINE_KEY: {**machine(), "cpu": "another CPU"}}))
    assert "recorded on" in recorded_elsewhere(path) and "another CPU" in recorded_elsewhere(path)
