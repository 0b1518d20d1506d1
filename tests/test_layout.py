"""The package layout: Qlib-facing folders depend on nothing that uses them; one name in site-packages;
every declared dependency pinned in the constraints the results were measured with."""

from __future__ import annotations

import ast
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import storm_bt

ROOT = Path(__file__).resolve().parents[1]


def _storm_bt_imports(folder: Path) -> set[str]:
    found = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found |= {n for n in names if n.split(".")[0] == "storm_bt"}
    return found


@pytest.mark.parametrize("folder", ["handlers", "strategies"])
def test_qlib_facing_folders_import_only_themselves(folder):
    imported = _storm_bt_imports(ROOT / folder)
    assert imported, f"{folder}/ should import its own modules as storm_bt.{folder}"
    assert all(name.startswith(f"storm_bt.{folder}") for name in imported), imported


def test_only_storm_bt_is_installed_at_the_top_of_site_packages():
    assert sorted(k for k, v in packages_distributions().items() if "storm_bt" in v) == ["storm_bt"]


def test_every_subpackage_says_what_it_owns():
    package = Path(storm_bt.__file__).parent
    inits = [*package.glob("*/__init__.py"), ROOT / "handlers" / "__init__.py", ROOT / "strategies" / "__init__.py"]
    for init in inits:
        module = ast.parse(init.read_text())
        assert ast.get_docstring(module), f"{init} has no docstring"
        targets = [t for n in module.body if isinstance(n, ast.Assign) for t in n.targets]
        targets += [n.target for n in module.body if isinstance(n, ast.AnnAssign)]
        assert "__all__" in [t.id for t in targets if isinstance(t, ast.Name)], f"{init} declares no __all__"


def _pinned_versions(constraints: Path) -> dict[str, str]:
    pins = {}
    for line in constraints.read_text().splitlines():
        if line and not line.startswith(("#", " ")):
            pinned = Requirement(line)
            (spec,) = pinned.specifier
            assert spec.operator == "==", f"{constraints.name}: {line!r} is not an exact pin"
            pins[canonicalize_name(pinned.name)] = spec.version
    return pins


def test_every_declared_dependency_is_pinned_inside_its_range():
    pins = _pinned_versions(ROOT / "experiments" / "constraints.txt")
    for declared in map(Requirement, requires("storm_bt")):  # install_requires and every extra
        name = canonicalize_name(declared.name)
        assert name in pins, f"{declared.name} is declared in setup.py but not pinned in experiments/constraints.txt"
        assert declared.specifier.contains(pins[name]), f"{declared.name}=={pins[name]} is outside {declared}"
