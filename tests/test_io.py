"""Config files and shared state: YAML errors name the file, unknown keys are rejected, versions are recorded."""

from __future__ import annotations

import pytest

from storm_bt.io import check_keys, package_versions, read_yaml
from storm_bt.pipelines.eval_config import EvalConfig
from storm_bt.pipelines.trading import TradeConfig


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [a\nseeds: [0]\n", "is not valid YAML"),  # unclosed flow sequence
        ("models:\n\t- a\n", "is not valid YAML"),  # a tab as indentation
        ("seeds: [0]\nseeds: [1]\n", "is not valid YAML.*duplicate key"),
        ("x: !!python/object/apply:os.system ['true']\n", "is not valid YAML"),
        ("- a\n- b\n", "must hold a mapping of keys to values, got list"),
        ("", "must hold a mapping of keys to values, got NoneType"),
    ],
)
def test_bad_yaml_is_one_message_naming_the_file(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as caught:
        read_yaml(path)
    assert str(path) in str(caught.value)
    for loader in (EvalConfig.from_yaml, TradeConfig.from_yaml):
        with pytest.raises(ValueError, match=message):
            loader(path)


def test_check_keys_names_unknown_and_missing_keys():
    check_keys({"a": 1}, {"a", "b"}, required={"a"})
    with pytest.raises(ValueError, match=r"data: unknown keys \['c'\]; expected some of \['a', 'b'\]"):
        check_keys({"a": 1, "c": 2}, {"a", "b"}, where="data")
    with pytest.raises(ValueError, match=r"missing keys \['b'\]"):
        check_keys({"a": 1}, {"a", "b"}, required={"b"})


def test_package_versions_name_python_and_the_numeric_stack():
    versions = package_versions()
    assert {"python", "storm_bt", "torch", "pyqlib", "numpy", "pandas", "stable_baselines3"} <= set(versions)
    assert all(isinstance(v, str) and v[0].isdigit() for v in versions.values())
