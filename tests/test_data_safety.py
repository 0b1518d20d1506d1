"""Nothing lost: a failed or refused data command leaves every input and earlier output byte-identical."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
from helpers import folder_digest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storm_bt.cli import main
from storm_bt.data.csv_source import load_csv_dir
from storm_bt.data.provider import check_provider, write_provider
from storm_bt.data.schema import DataValidationError
from storm_bt.data.synthetic import SyntheticMarketConfig, write_market_csvs
from storm_bt.io import LockedError, exclusive
from storm_bt.workflows.runs import load_artifacts, tracking_uri


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "storm_bt.cli", *args], capture_output=True, text=True, check=False)


def _popen_ingest(csv_dir: Path, qlib_dir: Path, universe: str) -> subprocess.Popen:
    args = ["data", "ingest", "--csv-dir", str(csv_dir), "--qlib-dir", str(qlib_dir), "--universe", universe]
    return subprocess.Popen([sys.executable, "-m", "storm_bt.cli", *args], stderr=subprocess.PIPE, text=True)


@pytest.fixture
def csv_dir(tmp_path: Path) -> Path:
    out = tmp_path / "csv"
    write_market_csvs(SyntheticMarketConfig(n_stocks=4, n_days=90, seed=3, n_sectors=2), out)
    return out


def test_ingest_refuses_a_folder_that_is_not_a_provider(csv_dir, tmp_path):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.txt").write_text("years of work\n")
    before = folder_digest(other)
    done = _cli("data", "ingest", "--csv-dir", str(csv_dir), "--qlib-dir", str(other))
    assert done.returncode == 2
    assert "is a folder that is not a Qlib provider" in done.stderr and "left untouched" in done.stderr
    assert folder_digest(other) == before


def test_ingest_into_its_own_csv_folder_deletes_nothing(csv_dir):
    before = folder_digest(csv_dir)
    done = _cli("data", "ingest", "--csv-dir", str(csv_dir), "--qlib-dir", str(csv_dir))
    assert done.returncode == 2 and "not a Qlib provider" in done.stderr
    assert folder_digest(csv_dir) == before


def test_ingest_refuses_a_regular_file(csv_dir, tmp_path):
    target = tmp_path / "provider"
    target.write_text("not a folder\n")
    done = _cli("data", "ingest", "--csv-dir", str(csv_dir), "--qlib-dir", str(target))
    assert done.returncode == 2 and "is a file, not a folder" in done.stderr
    assert target.read_text() == "not a folder\n"
    assert not (tmp_path / ".provider.old").exists()


def test_empty_folder_becomes_a_provider(csv_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    summary = write_provider(load_csv_dir(csv_dir), tmp_path / "empty", "toy")
    assert summary.mode == "fresh" and (tmp_path / "empty" / "calendars" / "day.txt").is_file()


def test_quickstart_with_bad_csvs_keeps_the_run_provider(csv_dir, tmp_path):
    run = tmp_path / "run"
    write_provider(load_csv_dir(csv_dir), run / "qlib_data", "synth")
    before = folder_digest(run / "qlib_data")
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = (csv_dir / "SYN001.csv").read_text().splitlines()
    lines[5] = lines[5].replace(lines[5].split(",")[4], "oops", 1)
    (bad / "SYN001.csv").write_text("\n".join(lines) + "\n")
    done = _cli("quickstart", "--run-dir", str(run), "--csv-dir", str(bad))
    assert done.returncode == 2 and "'oops' is not a number" in done.stderr
    assert folder_digest(run / "qlib_data") == before


def test_a_held_provider_lock_refuses_a_second_writer(csv_dir, tmp_path):
    qlib_dir = tmp_path / "q"
    write_provider(load_csv_dir(csv_dir), qlib_dir, "toy")
    before = folder_digest(qlib_dir)
    with exclusive(qlib_dir, "Qlib provider"):
        done = _cli("data", "ingest", "--csv-dir", str(csv_dir), "--qlib-dir", str(qlib_dir), "--universe", "other")
    assert done.returncode == 2
    assert "is being written by another process" in done.stderr and ".q.lock" in done.stderr
    assert folder_digest(qlib_dir) == before
    with pytest.raises(LockedError, match="Qlib provider"), exclusive(qlib_dir, "Qlib provider"):
        write_provider(load_csv_dir(csv_dir), qlib_dir, "other")


@pytest.mark.parametrize("trial", range(2))
def test_two_ingests_at_once_lose_no_universe(tmp_path, trial):
    """Two universes written into one provider at once: each either lands or is refused, never lost."""
    markets = {}
    for name, seed in (("alpha", 11 + trial), ("beta", 21 + trial)):
        markets[name] = tmp_path / name
        write_market_csvs(SyntheticMarketConfig(n_stocks=6, n_days=400, seed=seed, n_sectors=2), markets[name])
    for path in markets["beta"].glob("SYN*.csv"):  # distinct tickers per universe
        path.rename(path.with_name(path.name.replace("SYN", "ALT")))
    qlib_dir = tmp_path / "q"
    procs = {name: _popen_ingest(folder, qlib_dir, name) for name, folder in markets.items()}
    outcomes = {name: (proc.wait(timeout=240), proc.stderr.read()) for name, proc in procs.items()}
    landed = [name for name, (code, _) in outcomes.items() if code == 0]
    for code, err in outcomes.values():
        assert code == 0 or "is being written by another process" in err, err
    assert landed, outcomes
    for name in landed:
        assert (qlib_dir / "instruments" / f"{name}.txt").is_file(), f"universe {name} was lost"
    listed = (qlib_dir / "instruments" / "all.txt").read_text()
    assert all(f"{'SYN' if n == 'alpha' else 'ALT'}000\t" in listed for n in landed)


def test_update_of_a_damaged_provider_is_refused_unchanged(csv_dir, tmp_path):
    qlib_dir = tmp_path / "q"
    panel = load_csv_dir(csv_dir)
    last = panel["date"].max()
    write_provider(panel[panel["date"] < last], qlib_dir, "toy")
    damaged = qlib_dir / "features" / "syn002" / "open.day.bin"
    values = np.fromfile(damaged, dtype="<f4")
    values[:-10].tofile(damaged)  # ten sessions short
    before = folder_digest(qlib_dir)
    short = r"syn002/open.day.bin holds 79 values from session 0.*89 values from session 0"
    with pytest.raises(DataValidationError, match=short):
        check_provider(qlib_dir)
    done = _cli("data", "ingest", "--csv-dir", str(csv_dir), "--qlib-dir", str(qlib_dir), "--universe", "toy")
    assert done.returncode == 2 and "the provider is damaged" in done.stderr
    assert folder_digest(qlib_dir) == before


def test_benchmark_name_cannot_escape_the_provider(csv_dir, tmp_path):
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    done = _cli(
        "data", "ingest", "--csv-dir", str(csv_dir), "--qlib-dir", str(tmp_path / "a" / "b" / "q"),
        "--benchmark-name", "../../../EVILBENCH",
    )  # fmt: skip
    assert done.returncode == 2 and "benchmark: instrument name '../../../EVILBENCH' is not allowed" in done.stderr
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if not p.name.endswith(".lock"))
    assert [p for p in after if p not in before and p.parts[0] != "a"] == []
    assert not list(tmp_path.rglob("*.day.bin"))


@pytest.mark.parametrize("name", ["SYN\t9.csv", "SYN\n9.csv", "SYN 9.csv", "A..B.csv"])
def test_a_file_name_that_is_no_ticker_is_named(csv_dir, tmp_path, name):
    (csv_dir / name).write_bytes((csv_dir / "SYN000.csv").read_bytes())
    done = _cli("data", "ingest", "--csv-dir", str(csv_dir), "--qlib-dir", str(tmp_path / "q"))
    assert done.returncode == 2 and f"file {name!r}: instrument name" in done.stderr
    assert not (tmp_path / "q").exists()


def test_hidden_csv_files_are_skipped_with_a_warning(csv_dir, tmp_path):
    (csv_dir / "..csv").write_bytes((csv_dir / "SYN000.csv").read_bytes())
    done = _cli("data", "ingest", "--csv-dir", str(csv_dir), "--qlib-dir", str(tmp_path / "q"))
    assert done.returncode == 0 and "skipped '..csv'" in done.stderr
    assert "4 instruments" in done.stderr


def test_a_broken_workflow_stops_the_quickstart_before_any_stage(tmp_path):
    (tmp_path / "bad.yaml").write_text("seeds: [0]\nseeds: [1]\n")
    done = _cli("quickstart", "--run-dir", str(tmp_path / "run"), "--workflow", str(tmp_path / "bad.yaml"))
    assert done.returncode == 2 and "bad.yaml is not valid YAML" in done.stderr and "duplicate key" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


def test_a_quickstart_folder_in_use_refuses_a_second_quickstart(tmp_path):
    run = tmp_path / "run"
    with exclusive(run, "quickstart run folder"):
        done = _cli("quickstart", "--run-dir", str(run))
    assert done.returncode == 2 and "quickstart run folder" in done.stderr and "Traceback" not in done.stderr
    assert not run.exists()


def test_a_copied_run_folder_records_and_reads_only_inside_itself(tmp_path, monkeypatch):
    """mlflow stores absolute artifact paths: a copy must not write into, or read from, its original."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    monkeypatch.chdir(original)  # mlflow puts a new experiment's artifacts under ./mlruns
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(original))
    experiment = client.create_experiment("workflow")
    (tmp_path / "config").write_bytes(pickle.dumps({"run": "first"}))
    first = client.create_run(experiment).info.run_id
    client.log_artifact(first, str(tmp_path / "config"))
    client.set_terminated(first)
    shutil.copytree(original, copy)
    before = folder_digest(original)

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(copy))
    second = client.create_run(experiment).info.run_id
    (tmp_path / "config").write_bytes(pickle.dumps({"run": "second"}))
    client.log_artifact(second, str(tmp_path / "config"))
    client.set_terminated(second)
    assert folder_digest(original) == before
    assert (copy / "mlruns" / experiment / second / "artifacts" / "config").is_file()

    shutil.rmtree(original)  # the copy stands on its own
    assert load_artifacts(copy, ("config",), run_id=first)[1]["config"] == {"run": "first"}
    assert load_artifacts(copy, ("config",))[1]["config"] == {"run": "second"}


# Edits that make a CSV file invalid, each applied to one row (or the whole file) of one ticker.
PRICE_FIELDS = ("open", "high", "low", "close", "adj_close")
BAD_PRICES = ("", "abc", "-5", "0", "nan", "inf", "1e300", "12,5")
BAD_VOLUMES = ("", "abc", "-5", "nan")
BAD_DATES = ("", "2015-13-01", "yesterday", "2015-02-30", "2099-01-02")
MALFORMATIONS = ("price", "volume", "date", "duplicate", "swap", "drop_column", "header_only", "binary")


def _malform(path: Path, how: str, row: int, value: str, field: str) -> None:
    header, *rows = path.read_text().splitlines()
    columns = header.split(",")
    row %= len(rows)
    cells = rows[row].split(",")
    if how in ("price", "volume", "date"):
        cells[columns.index(field)] = value
        rows[row] = ",".join(cells)
    elif how == "duplicate":
        rows.insert(row, rows[row])
    elif how == "swap":  # two sessions out of order
        other = (row + 1) % len(rows)
        rows[row], rows[other] = rows[other], rows[row]
    elif how == "drop_column":
        keep = [i for i, c in enumerate(columns) if c != field]
        header, rows = ",".join(columns[i] for i in keep), [",".join(r.split(",")[i] for i in keep) for r in rows]
    elif how == "header_only":
        rows = []
    elif how == "binary":
        path.write_bytes(bytes(range(256)) * 4)
        return
    path.write_text("\n".join([header, *rows]) + "\n")


@st.composite
def malformations(draw):
    how = draw(
        st.sampled_from(["price", "volume", "date", "duplicate", "swap", "drop_column", "header_only", "binary"])
    )
    field, value = "", ""
    if how == "price":
        field, value = draw(st.sampled_from(PRICE_FIELDS)), draw(st.sampled_from(BAD_PRICES))
    elif how == "volume":
        field, value = "volume", draw(st.sampled_from(BAD_VOLUMES))
    elif how == "date":
        field, value = "date", draw(st.sampled_from(BAD_DATES))
    elif how == "drop_column":
        field = draw(st.sampled_from(("date", *PRICE_FIELDS, "volume")))
    return how, draw(st.integers(0, 10_000)), value, field, draw(st.integers(0, 3))


@pytest.fixture(scope="module")
def provider_and_csvs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    write_market_csvs(SyntheticMarketConfig(n_stocks=4, n_days=90, seed=3, n_sectors=2), root / "csv")
    write_provider(load_csv_dir(root / "csv"), root / "provider", "toy")
    return root / "provider", root / "csv"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=malformations())
def test_malformed_csv_folders_are_named_refused_and_change_nothing(provider_and_csvs, caplog, case):
    """Any malformed file in the folder: exit code 2, one message naming the file, provider unchanged."""
    provider, clean = provider_and_csvs
    how, row, value, field, stock = case
    before = folder_digest(provider)
    with tempfile.TemporaryDirectory() as tmp:
        csv_dir = Path(tmp) / "csv"
        shutil.copytree(clean, csv_dir)
        bad = csv_dir / f"SYN{stock:03d}.csv"
        _malform(bad, how, row, value, field)
        caplog.clear()
        code = main(["data", "ingest", "--csv-dir", str(csv_dir), "--qlib-dir", str(provider), "--universe", "toy"])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert code == 2, (case, errors)
    assert len(errors) == 1 and bad.name in errors[0], (case, errors)
    assert folder_digest(provider) == before
