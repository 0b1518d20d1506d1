"""experiments/train_storm.py: the workflow's own model trained without qrun, by one process or two."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import qlib_features
from qlib.data.dataset import DatasetH
from qlib.utils import init_instance_by_config

from storm_bt.data.provider import read_calendar, write_provider
from storm_bt.data.synthetic import SyntheticMarketConfig, make_market
from storm_bt.model import StormModel
from storm_bt.workflows.qrun import load_workflow, retarget, write_workflow
from storm_bt.workflows.segments import Segments

SCRIPT = Path(__file__).parents[1] / "experiments" / "train_storm.py"
MARKET = SyntheticMarketConfig(n_stocks=12, n_days=400, seed=5)


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("train_storm")
    write_provider(make_market(MARKET).panel, root / "qlib", "synth")
    seg = Segments.carve(read_calendar(root / "qlib"), (0.6, 0.2, 0.2), embargo=2)
    synth = load_workflow("experiments/workflow_storm_small_synth.yaml")
    config = retarget(synth, root / "qlib", "synth", "SYNTH_EW", seg)
    config["task"]["model"]["kwargs"].update(epochs=2, batch_size=16, progress=False, run_dir=None)
    path = root / "workflow.yaml"
    write_workflow(config, path)
    return path, config


def _train(cmd_head: list[str], workflow: Path, out: Path, *extra: str, threads: int) -> subprocess.CompletedProcess:
    """The script in a child process with ``threads`` torch threads (float sums depend on the count)."""
    cmd = [*cmd_head, str(SCRIPT), str(workflow), "--run-dir", str(out / "run"), "--panel-dir", str(out / "panels")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads)}
    return subprocess.run([*cmd, *extra], capture_output=True, text=True, env=env, timeout=600, check=False)


@pytest.mark.parametrize("target_days", [1, 2])
def test_one_process_trains_the_model_that_qlib_fits(workflow, tmp_path, target_days):
    path, config = workflow
    setting = ("--set", f"target_days={target_days}")
    done = _train([sys.executable], path, tmp_path, *setting, threads=torch.get_num_threads())  # this process's count
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 epochs in this run" in done.stdout and "train samples/s" in done.stdout
    assert len(list((tmp_path / "panels").glob("*.npz"))) == 1
    script_history = json.loads((tmp_path / "run" / "history.json").read_text())

    qlib_features(Path(config["qlib_init"]["provider_uri"]), ["SYN000"], ["$close"])  # Qlib on this provider
    dataset = init_instance_by_config(config["task"]["dataset"])
    assert isinstance(dataset, DatasetH)
    kwargs = {**config["task"]["model"]["kwargs"], "run_dir": str(tmp_path / "qlib_run"), "target_days": target_days}
    StormModel(**kwargs).fit(dataset)
    qlib_history = json.loads((tmp_path / "qlib_run" / "history.json").read_text())
    assert script_history == qlib_history  # same data, model, seed and schedule: the same epochs exactly


def test_a_setting_override_that_is_not_a_training_setting_is_refused(workflow, tmp_path):
    path, _ = workflow
    done = _train([sys.executable], path, tmp_path, "--set", "learning_rate=0.1", threads=1)
    assert done.returncode != 0 and "Unknown training setting(s) ['learning_rate']" in done.stderr
    assert not (tmp_path / "panels").exists()  # refused before any data was built


@pytest.mark.parametrize("setting", ["members=3", "refit=true"])
def test_members_and_refit_are_refused_instead_of_ignored(workflow, tmp_path, setting):
    path, _ = workflow
    done = _train([sys.executable], path, tmp_path, "--set", setting, threads=1)
    assert done.returncode != 0 and "members and refit need qrun" in done.stderr
    assert not (tmp_path / "panels").exists()


@pytest.mark.parametrize("ablation", [None, "ts_only"])
def test_two_processes_share_one_panel_and_train_together(workflow, tmp_path, ablation):
    path, config = workflow
    if ablation:
        config = json.loads(json.dumps(config, default=str))
        config["task"]["model"]["kwargs"]["ablation"] = ablation
        path = tmp_path / "workflow.yaml"
        write_workflow(config, path)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    done = _train(launch, path, tmp_path, "--set", "epochs=1", threads=1)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout and "1 epochs in this run" in done.stdout
    assert len(list((tmp_path / "panels").glob("*.npz"))) == 1  # built once, by the first process
    assert (tmp_path / "run" / "last.pt").is_file()
