"""A pooled training universe: a universe plus the most traded names of a wider one, chosen on the
provider's first sessions only, written without touching anything else of the provider."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import folder_digest, qlib_features
from qlib.data import D

from storm_bt.cli import main
from storm_bt.data.csv_source import load_csv_dir
from storm_bt.data.pooled import pooled_members, write_pooled_universe
from storm_bt.data.provider import read_instruments, write_provider

RANKED_ON = 60  # sessions


@pytest.fixture(scope="module")
def panel(small_market) -> pd.DataFrame:
    return load_csv_dir(small_market[1])


@pytest.fixture(scope="module")
def two_universes(panel, tmp_path_factory) -> tuple[Path, list[str]]:
    """A provider holding universe 'wide' (all 12 names) and 'core' (its first 4)."""
    root = tmp_path_factory.mktemp("pooled") / "qlib"
    core = sorted(panel["instrument"].unique())[:4]
    write_provider(panel, root, "wide")
    write_provider(panel[panel["instrument"].isin(core)], root, "core")
    return root, core


def _most_traded(panel: pd.DataFrame, exclude: list[str], n: int) -> list[str]:
    """The raw dollar volume ranking, computed from the CSV bars themselves."""
    first = sorted(panel["date"].unique())[:RANKED_ON]
    window = panel[panel["date"].isin(first) & ~panel["instrument"].isin(exclude)]
    traded = (window["close"] * window["volume"]).groupby(window["instrument"]).mean()
    return list(traded.sort_values(ascending=False).index[:n])


def test_members_are_the_kept_universe_and_the_most_traded_of_the_rest(panel, two_universes):
    root, core = two_universes
    members = pooled_members(root, "core", "wide", 7, RANKED_ON)
    assert members == sorted(core + _most_traded(panel, core, 3))
    assert pooled_members(root, "core", "wide", 4, RANKED_ON) == core


def test_prices_after_the_ranking_window_do_not_move_the_choice(panel, two_universes, tmp_path):
    root, core = two_universes
    chosen = pooled_members(root, "core", "wide", 7, RANKED_ON)
    left_out = sorted(set(panel["instrument"]) - set(chosen))[0]
    later = panel["date"] > sorted(panel["date"].unique())[RANKED_ON - 1]
    changed = panel.copy()
    changed.loc[later & (changed["instrument"] == left_out), "volume"] *= 1e6  # the most traded name, later
    write_provider(changed, tmp_path / "qlib", "wide")
    write_provider(changed[changed["instrument"].isin(core)], tmp_path / "qlib", "core")
    assert pooled_members(tmp_path / "qlib", "core", "wide", 7, RANKED_ON) == chosen
    assert left_out in pooled_members(tmp_path / "qlib", "core", "wide", 7, RANKED_ON + 1)


def test_the_universe_is_written_for_qlib_and_a_rerun_changes_nothing(two_universes, tmp_path):
    root = tmp_path / "qlib"
    shutil.copytree(two_universes[0], root)
    members = write_pooled_universe(root, "pooled", "core", "wide", 7, RANKED_ON)
    spans = read_instruments(root, "all").loc[members]
    pd.testing.assert_frame_equal(read_instruments(root, "pooled"), spans)
    qlib_features(root, members, ["$close"])  # Qlib initialised on the provider
    assert D.list_instruments(D.instruments("pooled"), as_list=True) == members
    before = folder_digest(root)
    assert write_pooled_universe(root, "pooled", "core", "wide", 7, RANKED_ON) == members
    assert folder_digest(root) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pooled", "core", "wide", 8, RANKED_ON), "already exists with other members"),
        (("other", "core", "nasdaq", 8, RANKED_ON), "no universe 'nasdaq'"),
        (("other", "core", "wide", 3, RANKED_ON), "smaller than universe 'core'"),
        (("other", "core", "wide", 13, RANKED_ON), "8 names outside 'core'"),
        (("other", "core", "wide", 8, 10_000), "sessions must be between 1 and"),
        (("all", "core", "wide", 8, RANKED_ON), "not 'all'"),
    ],
)
def test_bad_requests_are_refused_naming_the_problem_and_leave_the_provider_byte_identical(
    two_universes, tmp_path, args, message
):
    root = tmp_path / "qlib"
    shutil.copytree(two_universes[0], root)
    write_pooled_universe(root, "pooled", "core", "wide", 7, RANKED_ON)
    before = folder_digest(root)
    with pytest.raises(ValueError, match=message):
        write_pooled_universe(root, *args)
    assert folder_digest(root) == before


def test_the_cli_writes_the_universe(two_universes, tmp_path):
    root = tmp_path / "qlib"
    shutil.copytree(two_universes[0], root)
    flags = ["--qlib-dir", str(root), "--name", "pooled", "--keep", "core", "--from", "wide", "--size", "6"]
    assert main(["data", "pool", *flags, "--sessions", str(RANKED_ON)]) == 0
    assert list(read_instruments(root, "pooled").index) == pooled_members(root, "core", "wide", 6, RANKED_ON)
