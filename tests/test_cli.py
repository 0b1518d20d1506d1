"""One subprocess smoke test per ``storm-bt`` subcommand, and the README's commands parse."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from storm_bt.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "storm_bt.cli", *args], capture_output=True, text=True, check=False)


def test_synth_then_ingest(tmp_path):
    done = _run("data", "synth", "--out", str(tmp_path / "csv"), "--stocks", "5", "--days", "120", "--seed", "2")
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "csv").glob("*.csv"))) == 5
    done = _run(
        "data", "ingest", "--csv-dir", str(tmp_path / "csv"), "--qlib-dir", str(tmp_path / "qlib"), "--universe", "toy"
    )
    assert done.returncode == 0, done.stderr
    assert "fresh provider" in done.stderr and "5 instruments in 'toy', benchmark TOY_EW" in done.stderr
    calendar = pd.read_csv(tmp_path / "qlib" / "calendars" / "day.txt", header=None)
    assert len(calendar) == 120


def test_ingest_error_is_clear_and_keeps_the_provider(tmp_path):
    assert (
        _run(
            "data", "synth", "--out", str(tmp_path / "csv"), "--stocks", "3", "--days", "80", "--sectors", "2"
        ).returncode
        == 0
    )
    assert _run("data", "ingest", "--csv-dir", str(tmp_path / "csv"), "--qlib-dir", str(tmp_path / "q")).returncode == 0
    before = (tmp_path / "q" / "features" / "syn000" / "close.day.bin").read_bytes()
    bad = tmp_path / "csv" / "SYN001.csv"
    lines = bad.read_text().splitlines()
    lines[10] = lines[10].replace(lines[10].split(",")[4], "oops", 1)
    bad.write_text("\n".join(lines) + "\n")
    done = _run("data", "ingest", "--csv-dir", str(tmp_path / "csv"), "--qlib-dir", str(tmp_path / "q"))
    assert done.returncode == 2
    assert "SYN001.csv, row 11, field 'close': 'oops' is not a number" in done.stderr
    assert (tmp_path / "q" / "features" / "syn000" / "close.day.bin").read_bytes() == before


def test_download_rejects_bad_universe_without_network(tmp_path):
    done = _run(
        "data",
        "download",
        "--universe",
        "dj31!",
        "--start",
        "2020-01-01",
        "--end",
        "2020-02-01",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 2
    assert "'dj31!' is neither a shipped universe (dj30, sp500) nor a comma-separated ticker list" in done.stderr


def test_shipped_universes():
    from storm_bt.data.universes import universe_tickers

    dj30 = universe_tickers("dj30")
    assert len(dj30) == 29 and dj30[0] == "AAPL" and "DOW" not in dj30
    assert len(universe_tickers("sp500")) == 408


def test_readme_commands_parse():
    """Every ``storm-bt`` command shown in the README is accepted by the parser."""
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^(?:.*&& )?storm-bt (.+?)(?:\s+#.*)?$", readme, flags=re.MULTILINE)
    assert len(commands) >= 4
    parser = build_parser()
    for command in commands:
        args = parser.parse_args(shlex.split(command))
        assert callable(args.func)


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the parser (``("data", "ingest")``, ...), found from argparse itself."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += [(*prefix, name), *_subcommands(sub, (*prefix, name))]
    return paths


COMMANDS = _subcommands(build_parser())


def test_every_subcommand_is_listed():
    assert {("data", "ingest"), ("quickstart",), ("trade", "eval"), ("evaluate",), ("report",)} <= set(COMMANDS)
    assert len(COMMANDS) >= 13


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*command, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: storm-bt {' '.join(command)}")


def test_help_runs_as_a_program():
    done = _run("data", "ingest", "--help")
    assert done.returncode == 0 and "--qlib-dir" in done.stdout


def test_no_gym_banner_reaches_the_user():
    """pyqlib's gym 0.26 prints a deprecation banner when Qlib's records or SB3 import it."""
    code = "import storm_bt, qlib.workflow.record_temp, stable_baselines3; print('imported')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "imported"
    assert "Gym has been unmaintained" not in done.stderr and "Gymnasium" not in done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "download", "--out", "x", "--retries", "-5"], "argument --retries: must be at least 0, got -5"),
        (["evaluate", "--config", "c", "--out", "o", "--jobs", "0"], "argument --jobs: must be at least 1, got 0"),
        (["evaluate", "--config", "c", "--out", "o", "--threads", "two"], "--threads: expected a whole number"),
        (["data", "synth", "--out", "x", "--stocks", "1"], "argument --stocks: must be at least 2, got 1"),
    ],
)
def test_out_of_range_counts_are_named_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(argv)
    assert done.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("command", [["report", "{run}"], ["factors", "export", "--run", "{run}", "--out", "{out}"]])
def test_a_damaged_tracking_database_is_named_and_left_as_it_is(tmp_path, command, caplog):
    from storm_bt.cli import main

    run = tmp_path / "run"
    run.mkdir()
    damaged = bytes(range(256)) * 20
    (run / "mlruns.db").write_bytes(damaged)
    argv = [part.format(run=run, out=tmp_path / "factors.h5") for part in command]
    assert main(argv) == 2
    assert f"{run / 'mlruns.db'}: not a readable mlflow tracking database" in caplog.text
    assert (run / "mlruns.db").read_bytes() == damaged and not (tmp_path / "factors.h5").exists()
