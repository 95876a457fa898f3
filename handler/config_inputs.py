"""Configuration inputs Dynaconf would crash on, refused as the user's mistakes (one message, exit
status 2) before or while it merges: a `HANDLER_*` value nested too deeply for its recursive TOML
parser, and a `@format`/`@jinja` value that fails to evaluate."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from handler.config import MISSING, PREFIX, ConfigError, Problem, _parse_env_value, _walk

T = TypeVar("T")

TEMPLATE_MARKERS = ("@format", "@jinja")
"""Dynaconf's lazy values: evaluated by Dynaconf when the settings are merged."""


def readable_variables(real_env: Mapping[str, str], dotenv: Mapping[str, str]) -> None:
    """HANDLER_* values are TOML literals to Dynaconf, which parses them recursively: one nested
    too deeply is refused here, by name, instead of ending in Dynaconf's RecursionError."""
    problems = []
    for name, value, label in [(n, v, f"environment variable {n}") for n, v in real_env.items()] + [
        (n, v, f".env ({n})") for n, v in dotenv.items() if n not in real_env
    ]:
        if not name.startswith(PREFIX + "_"):
            continue
        try:
            _parse_env_value(value)
        except RecursionError:
            problems.append(
                Problem(
                    name, MISSING, label, "is nested too deeply to read (arrays or tables inside each other)"
                )
            )
    if problems:
        raise ConfigError(problems)


def evaluated(
    merge: Callable[[], T],
    layers: list[tuple[str, dict[str, Any]]],
    real_env: Mapping[str, str],
    dotenv: Mapping[str, str],
) -> T:
    """The merged settings (`merge()`: Dynaconf evaluates lazy values as it merges). A
    `@format`/`@jinja` value that fails to evaluate (a missing name, a syntax error, an error in the
    template's own code) is the user's mistake: it is reported with the values that hold one, not
    as Dynaconf's traceback."""
    try:
        return merge()
    except Exception as e:
        variables = [(n, v, f"environment variable {n}") for n, v in real_env.items()]
        variables += [(n, v, f".env ({n})") for n, v in dotenv.items() if n not in real_env]
        lazy = [
            Problem(path, value, label, "")
            for label, layer in layers
            for path, value in _walk(layer)
            if isinstance(value, str) and value.lstrip().startswith(TEMPLATE_MARKERS)
        ] + [
            Problem(name, value, label, "")
            for name, value, label in variables
            if name.startswith(PREFIX + "_") and value.lstrip().startswith(TEMPLATE_MARKERS)
        ]
        if not lazy:
            raise  # not a template of the user's: a bug, with its traceback
        error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        raise ConfigError(
            [
                Problem(
                    p.key,
                    p.value,
                    p.source,
                    f"a {p.value.split()[0]} value Dynaconf could not evaluate ({error}); allowed: "
                    "a template over settings that exist, or a plain value",
                )
                for p in lazy
            ]
        ) from None
