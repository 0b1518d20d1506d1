"""The executors: outcomes in order, thread limits, failures named while the others finish, dead workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from storm_bt.io import atomic_path
from storm_bt.parallel import InProcessExecutor, LocalExecutor, RayExecutor, Task, TaskFailures, run_all


def _threads_seen(x: int) -> tuple[int, str, int]:
    import torch

    return x * x, os.environ["OMP_NUM_THREADS"], torch.get_num_threads()


def _pid() -> int:
    return os.getpid()


def _write(path: str, text: str) -> str:
    Path(path).write_text(text)
    return text


def _fail(message: str) -> None:
    raise ValueError(message)


def _chatty_fail(message: str) -> None:
    print("step 1 of 2 done", flush=True)
    raise ValueError(message)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _die_once(marker: str, out: str) -> str:
    """Dies mid-write on its first attempt (leaving a half file beside ``out``), completes on the next."""
    with atomic_path(out) as tmp:
        tmp.write_text("half")
        if not Path(marker).exists():
            Path(marker).touch()
            _die()
        tmp.write_text("complete")
    return Path(out).read_text()


def test_local_pool_returns_values_in_order_under_each_tasks_thread_limit():
    tasks = [Task(f"t{i}", _threads_seen, {"x": i}, threads=1 + i % 2) for i in range(4)]
    values = run_all(LocalExecutor(jobs=2), tasks)
    assert values == [(0, "1", 1), (1, "2", 2), (4, "1", 1), (9, "2", 2)]


def test_workers_are_fresh_for_every_task_unless_no_task_asks():
    fresh = run_all(LocalExecutor(jobs=2), [Task(f"t{i}", _pid) for i in range(4)])
    warm = run_all(LocalExecutor(jobs=2), [Task(f"t{i}", _pid, fresh_process=False) for i in range(4)])
    assert len(set(fresh)) == 4 and len(set(warm)) <= 2 and os.getpid() not in fresh + warm


def test_a_failed_run_is_named_with_its_error_while_the_others_finish(tmp_path):
    tasks = [
        Task("first", _write, {"path": str(tmp_path / "a"), "text": "a"}),
        Task("broken run", _fail, {"message": "bad learning rate"}),
        Task("dead run", _die),
        Task("last", _write, {"path": str(tmp_path / "b"), "text": "b"}),
    ]
    with pytest.raises(TaskFailures) as info:
        run_all(LocalExecutor(jobs=2), tasks)
    message = str(info.value)
    assert "2 of 4 runs failed" in message
    assert "--- broken run ---" in message and "ValueError: bad learning rate" in message
    assert "--- dead run ---" in message and "worker process died" in message
    assert (tmp_path / "a").read_text() == "a" and (tmp_path / "b").read_text() == "b"


def test_in_process_runs_every_task_here_and_names_the_failed_one(tmp_path):
    threads = os.environ.get("OMP_NUM_THREADS")
    tasks = [
        Task("first", _write, {"path": str(tmp_path / "a"), "text": "a"}, threads=7),
        Task("broken run", _fail, {"message": "bad learning rate"}),
        Task("last", _write, {"path": str(tmp_path / "b"), "text": "b"}),
    ]
    with pytest.raises(TaskFailures, match=r"1 of 3 runs failed[\s\S]*--- broken run ---[\s\S]*bad learning rate"):
        run_all(InProcessExecutor(), tasks)
    assert (tmp_path / "a").read_text() == "a" and (tmp_path / "b").read_text() == "b"
    assert os.environ.get("OMP_NUM_THREADS") == threads  # this process's thread settings are left alone


def test_a_tasks_output_goes_to_its_log_and_its_tail_into_the_failure(tmp_path, capfd):
    log = tmp_path / "logs" / "task.log"
    with pytest.raises(TaskFailures, match=r"(?s)ValueError: bad data.*last lines of .*task.log.*step 1 of 2 done"):
        run_all(LocalExecutor(jobs=1), [Task("chatty", _chatty_fail, {"message": "bad data"}, log=str(log))])
    assert "step 1 of 2 done" in log.read_text()
    assert "step 1 of 2 done" not in capfd.readouterr().out


def test_bad_job_counts_and_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="--jobs"):
        LocalExecutor(jobs=0)
    with pytest.raises(ValueError, match="unique"):
        run_all(LocalExecutor(jobs=1), [Task("a", _fail, {"message": "x"})] * 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A one-node Ray cluster on the loopback address, started by the ``ray`` command as on a real head."""
    ray = pytest.importorskip("ray")
    port = _free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    start = [str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2"]
    start += ["--include-dashboard=false", "--disable-usage-stats"]
    subprocess.run(start, check=True, capture_output=True, timeout=120)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests folder
    try:
        yield f"127.0.0.1:{port}"
    finally:
        ray.shutdown()
        subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, timeout=120)


def test_ray_runs_tasks_and_retries_a_killed_worker_without_reusing_its_half_file(ray_cluster, tmp_path):
    out = tmp_path / "result.txt"
    tasks = [
        Task("square", _threads_seen, {"x": 3}, threads=2),
        Task("killed once", _die_once, {"marker": str(tmp_path / "died"), "out": str(out)}),
    ]
    values = run_all(RayExecutor(ray_cluster, retries=1), tasks)
    assert values == [(9, "2", 2), "complete"]
    assert (tmp_path / "died").exists() and out.read_text() == "complete"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("died", "result.txt")]
    assert all(n.startswith(".result.txt.") and n.endswith(".tmp") for n in leftovers)  # a killed write stays aside


def test_ray_reports_a_run_whose_worker_always_dies_and_finishes_the_others(ray_cluster, tmp_path):
    tasks = [Task("dies", _die), Task("writes", _write, {"path": str(tmp_path / "w"), "text": "w"})]
    with pytest.raises(TaskFailures, match=r"1 of 2 runs failed(.|\n)*--- dies ---(.|\n)*Ray gave up after 1"):
        run_all(RayExecutor(ray_cluster, retries=0), tasks)
    assert (tmp_path / "w").read_text() == "w"
