"""Configuration inputs Dynaconf would crash on, found so that configuration can refuse them as the
user's mistakes (one message, exit status 2): a `HANDLER_*` value nested too deeply for its
recursive TOML parser, and the `@format`/`@jinja` values, one of which failed to evaluate when a
merge raised. It only finds them: handler/config.py words the problems (this module imports
nothing of it, so the two do not import each other)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from handler.nested import walk

TEMPLATE_MARKERS = ("@format", "@jinja")
"""Dynaconf's lazy values: evaluated by Dynaconf when the settings are merged."""


def _variables(
    real_env: Mapping[str, str], dotenv: Mapping[str, str], prefix: str
) -> list[tuple[str, str, str]]:
    """(name, value, where) of the prefixed variables, the real environment's winning over .env's."""
    found = [(n, v, f"environment variable {n}") for n, v in real_env.items()]
    found += [(n, v, f".env ({n})") for n, v in dotenv.items() if n not in real_env]
    return [(n, v, where) for n, v, where in found if n.startswith(prefix + "_")]


def too_deep(
    real_env: Mapping[str, str], dotenv: Mapping[str, str], prefix: str, parse: Callable[[str], Any]
) -> list[tuple[str, str]]:
    """(name, where) of each variable whose value `parse` (Dynaconf's TOML literal parser, which
    recurses) cannot read without a RecursionError."""
    deep = []
    for name, value, where in _variables(real_env, dotenv, prefix):
        try:
            parse(value)
        except RecursionError:
            deep.append((name, where))
    return deep


def templates(
    layers: list[tuple[str, dict[str, Any]]],
    real_env: Mapping[str, str],
    dotenv: Mapping[str, str],
    prefix: str,
) -> list[tuple[str, str, str]]:
    """(key, value, where) of every lazy value in the layers and the variables."""
    found = [
        (path, value, label)
        for label, layer in layers
        for path, value in walk(layer)
        if isinstance(value, str) and value.lstrip().startswith(TEMPLATE_MARKERS)
    ]
    found += [
        (name, value, where)
        for name, value, where in _variables(real_env, dotenv, prefix)
        if value.lstrip().startswith(TEMPLATE_MARKERS)
    ]
    return found
