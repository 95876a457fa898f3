"""The documentation's promises: README's two set-up commands are the ones CI runs, and the
generated settings reference holds every key and refuses what would make it lie (`nox -s docs`
builds the whole site with --strict; these pin the generator's rules on their own)."""

from __future__ import annotations

import importlib.util
import shutil
import tomllib
from pathlib import Path

import pytest
from conftest import REPO
from mkdocs.exceptions import PluginError

SET_UP = 'python3 -m venv .venv && .venv/bin/pip install -q -e ".[dev]" && '


def _reference():
    spec = importlib.util.spec_from_file_location("docs_reference", REPO / "docs" / "hooks" / "reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_holds_the_two_set_up_commands_and_ci_runs_the_second() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert SET_UP + ".venv/bin/python -m handler simulate" in lines
    assert SET_UP + ".venv/bin/nox" in lines
    assert SET_UP + ".venv/bin/nox" in (REPO / ".ci" / "run").read_text().splitlines()


def test_the_settings_reference_lists_every_key_with_each_environments_value() -> None:
    out = _reference().settings_reference()
    defaults = tomllib.loads((REPO / "settings.toml").read_text())["default"]
    for table, keys in defaults.items():
        assert f"### `[{table}]`" in out
        for key, value in keys.items():
            if not isinstance(value, dict):
                assert f"| `{key}` |" in out, f"{table}.{key}"
    assert "| key | default | dev | fast | stable | production | what |" in out
    assert "| `min_endpointing_delay` | `0.5` |  | `0.3` | `1.5` | `0.5` |" in out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copy(REPO / "settings.toml", tmp_path / "settings.toml")
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    return tmp_path


def test_a_key_without_its_comment_fails_the_reference(tree: Path) -> None:
    settings = tree / "settings.toml"
    text = settings.read_text()
    line = next(x for x in text.splitlines() if x.startswith("jitter = "))
    settings.write_text(text.replace(line, line.split("#")[0].rstrip()))
    with pytest.raises(PluginError, match="retry.jitter has no comment"):
        _reference().settings_reference(tree)


def test_an_environment_key_settings_toml_lacks_fails_the_reference(tree: Path) -> None:
    with (tree / "environments" / "stable.toml").open("a") as f:
        f.write("\n[stable.nonsense]\nknob = 1\n")
    with pytest.raises(PluginError, match="stable.toml sets nonsense.knob"):
        _reference().settings_reference(tree)


def test_the_hook_reference_documents_every_hook() -> None:
    reference = _reference()
    module = reference._contract_module()
    hooks = [
        name
        for cls in vars(module).values()
        if isinstance(cls, type) and cls.__module__ == module.__name__
        for name, fn in vars(cls).items()
        if hasattr(fn, f"{module.PROJECT}_spec")
    ]
    assert "turn_completed" in hooks
    out = reference.hook_reference()
    for hook in hooks:
        assert f"#### `{hook}`" in out
