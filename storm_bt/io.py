"""Atomic, locked writes of shared state: an interrupted write never leaves a half file in place,
and two processes never write the same state at once.

Every artifact the project writes (CSV cache, Qlib provider, checkpoints, factor stores) goes
through these helpers, so a crash or a validation error keeps the previous version intact.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout
from ruamel.yaml import YAML, YAMLError

__all__ = [
    "LockedError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_keys",
    "config_from_yaml",
    "exclusive",
    "machine",
    "package_versions",
    "read_yaml",
    "staged_dir",
]

VERSIONED = (
    "storm_bt",
    "torch",
    "pyqlib",
    "numpy",
    "pandas",
    "lightgbm",
    "mlflow",
    "h5py",
    "numba",
    "gymnasium",
    "stable_baselines3",
    "backtrader",
)
"""The packages whose versions every artifact records (results depend on each of them)."""


class LockedError(RuntimeError):
    """Another process is writing the same shared state."""


@contextmanager
def exclusive(target: str | Path, what: str) -> Iterator[None]:
    """Hold the write lock of ``target`` (a file or folder) for the block, or fail at once.

    The lock is ``.<name>.lock`` beside ``target`` (a folder replaced by :func:`staged_dir` cannot
    hold its own lock). It is an OS lock: a crashed writer releases it, so a leftover lock file
    never blocks anyone.

    :param what: what ``target`` is, for the message ("Qlib provider", "factor store", ...).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(target.parent / f".{target.name}.lock", timeout=0)
    try:
        lock.acquire()
    except Timeout as e:
        raise LockedError(
            f"The {what} {target} is being written by another process (it holds {lock.lock_file}); "
            "wait for that process to finish, then run this command again."
        ) from e
    try:
        yield
    finally:
        lock.release()


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp's 0600 would make every artifact private
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


@contextmanager
def staged_dir(target: str | Path, copy_existing: bool) -> Iterator[Path]:
    """Yield a staging folder that replaces ``target`` only if the block succeeds.

    :param copy_existing: start the staging folder as a copy of ``target`` (for incremental
        updates); otherwise it starts empty.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.stage.", dir=target.parent))
    try:
        if copy_existing and target.exists():
            shutil.copytree(target, stage, dirs_exist_ok=True)
        yield stage
        backup = target.with_name(f".{target.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        if target.exists():
            os.replace(target, backup)
        os.replace(stage, target)
        shutil.rmtree(backup, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def machine() -> dict[str, str]:
    """What a trained model's float rounding depends on: the CPU model and the numeric libraries (runs
    trained on two CPUs differ by more than rounding, since training amplifies it)."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, **{package: version(package) for package in ("torch", "numpy")}}


def package_versions() -> dict[str, str]:
    """Versions of Python and of every package a result depends on, recorded beside each artifact."""
    return {name: version(name) for name in VERSIONED} | {"python": platform.python_version()}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping read with the safe loader; a syntax error, a duplicate key or a Python tag names the file.

    :raises ValueError: the file is not valid YAML, or does not hold a mapping.
    """
    path = Path(path)
    try:
        raw = YAML(typ="safe", pure=True).load(path.read_text())
    except YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a mapping of keys to values, got {type(raw).__name__}.")
    return raw


T = TypeVar("T")


def config_from_yaml(path: str | Path, build: Callable[[dict[str, Any]], T]) -> T:
    """``build`` applied to the mapping in ``path``; any error about its content is prefixed with the file."""
    raw = read_yaml(path)
    try:
        return build(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: {e}") from e


def check_keys(
    raw: dict[str, Any], allowed: set[str], required: frozenset[str] | set[str] = frozenset(), where: str = ""
) -> None:
    """Reject unknown and missing keys of a config mapping, naming them (and ``where`` they are)."""
    prefix = f"{where}: " if where else ""
    unknown = set(raw) - allowed
    if unknown:
        raise ValueError(f"{prefix}unknown keys {sorted(map(str, unknown))}; expected some of {sorted(allowed)}.")
    missing = required - set(raw)
    if missing:
        raise ValueError(f"{prefix}missing keys {sorted(missing)}.")
