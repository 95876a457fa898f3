"""Installed livekit provider plugins (`livekit-plugins-*`) as voice-handler providers, by config alone.

Discovery is cheap and imports nothing: it lists the `livekit.plugins` namespace directories and
reads each package's `__init__.py` with `ast` for the STT, LLM, TTS and VAD classes it exports, and
asks `importlib.metadata` for the distribution by its conventional name. A plugin module is
imported only when its provider is validated or built (a selected provider, or one with a table in
the configuration): its constructor's signature is the schema of `[<stage>.<name>]`.

What the registry gets per class (see `providers`):
- options: the provider's own table, plus the stage's shared keys (`llm.temperature`, ...) where the
  constructor has a parameter of that name; checked against `inspect.signature` (unknown names,
  simple types, literal choices, required parameters, URLs);
- secrets: the `*_API_KEY` variable the constructor documents or reads, when it names exactly one,
  or `api_key_env` from the table; passed as `api_key=` (the value never reaches a log);
- the shared pooled `http_session=`, and `max_retries=0` where the constructor takes them (livekit's
  connect options are the one retry layer, as for the built-ins).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

NAMESPACE = "livekit.plugins"
STAGE_CLASSES = {"vad": "VAD", "stt": "STT", "llm": "LLM", "tts": "TTS"}
API_KEY_ENV = "api_key_env"
"""Table key naming the environment variable that holds the provider's API key."""
INJECTED = ("api_key", "http_session", "client", "conn_options")
"""Constructor parameters voice-handler fills itself; never options."""
COMMON_ALIASES = {"llm": {"max_tokens": "max_completion_tokens"}}
"""A stage's shared key -> the constructor parameter it sets when the names differ."""
API_KEY_VAR = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_API_KEY\b")
URL_SCHEMES = ("http", "https", "ws", "wss")


@dataclass(frozen=True)
class Found:
    """One installed livekit plugin package, found without importing it."""

    module: str
    """The provider name: `livekit.plugins.<module>`."""
    distribution: str
    stages: tuple[str, ...]


def discover() -> list[Found]:
    """Every `livekit.plugins.*` package and the stage classes it exports (no plugin imported)."""
    # the namespace package's directories, found the way the import system would, without
    # importing even `livekit` (the config and --help paths import nothing of livekit)
    locations = [Path(entry or ".") / "livekit" / "plugins" for entry in sys.path]
    found: dict[str, Found] = {}
    for location in locations:
        if not location.is_dir():
            continue
        for init in sorted(location.glob("*/__init__.py")):
            module = init.parent.name
            if module in found or not module.isidentifier():
                continue
            stages = tuple(s for s, cls in STAGE_CLASSES.items() if cls in _exports(init))
            if stages:
                found[module] = Found(module, _distribution(module), stages)
    return [found[m] for m in sorted(found)]


def _exports(init: Path) -> set[str]:
    """`__all__` of a package's `__init__.py`, else the names it imports from its own modules."""
    try:
        tree = ast.parse(init.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return set()
    imported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            with_values = node.value
            if isinstance(with_values, ast.List | ast.Tuple):
                return {
                    e.value
                    for e in with_values.elts
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                }
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            imported |= {a.asname or a.name for a in node.names}
    return imported


def _distribution(module: str) -> str:
    for name in (f"livekit-plugins-{module.replace('_', '-')}", f"livekit-plugins-{module}"):
        try:
            return str(metadata.distribution(name).metadata["Name"])
        except metadata.PackageNotFoundError:
            continue
    return f"{NAMESPACE}.{module} (unknown distribution)"


# ------------------------------------------------------------------------- the constructor


@functools.cache
def constructor(module: str, stage: str) -> Callable[..., Any]:
    """What builds the stage object: the class, or its `load` classmethod for a VAD (silero's way).
    Imports the plugin (the only place that does)."""
    cls = getattr(importlib.import_module(f"{NAMESPACE}.{module}"), STAGE_CLASSES[stage])
    load = getattr(cls, "load", None)
    return load if stage == "vad" and callable(load) else cls


@dataclass(frozen=True)
class Parameter:
    name: str
    required: bool
    allowed: tuple[type, ...] | None
    """Python types a TOML value may have; None = not simply typed (not checked)."""
    choices: tuple[Any, ...] = ()
    """Literal values, when the annotation is only literals."""


@dataclass(frozen=True)
class Signature:
    parameters: dict[str, Parameter]
    any_keyword: bool

    def accepts(self, name: str) -> bool:
        return name in self.parameters or self.any_keyword


@functools.cache
def signature(module: str, stage: str) -> Signature:
    target = constructor(module, stage)
    init = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # an annotation that does not resolve: those parameters go unchecked
        hints = {}
    params: dict[str, Parameter] = {}
    any_keyword = False
    for p in inspect.signature(target).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            any_keyword = True
            continue
        if p.kind is p.VAR_POSITIONAL or p.name == "self":
            continue
        allowed, choices = _simple(hints.get(p.name, inspect.Parameter.empty))
        params[p.name] = Parameter(p.name, p.default is p.empty, allowed, choices)
    return Signature(params, any_keyword)


_SIMPLE = (str, int, float, bool)


def _simple(annotation: Any) -> tuple[tuple[type, ...] | None, tuple[Any, ...]]:
    """The TOML-representable types an annotation allows (None and livekit's NotGiven drop out:
    leaving a key out is how TOML says "not given"); (None, ()) when it is not that simple."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None, ()
    allowed: list[type] = []
    choices: list[Any] = []
    pending = [annotation]
    while pending:
        a = pending.pop()
        origin = typing.get_origin(a)
        if origin is typing.Union or origin is types.UnionType:
            pending.extend(typing.get_args(a))
        elif origin is typing.Literal:
            choices.extend(typing.get_args(a))
        elif origin in (list, tuple, set) or a in (list, tuple):
            allowed.append(list)
        elif origin is dict or a is dict:
            allowed.append(dict)
        elif a is type(None) or getattr(a, "__name__", "") == "NotGiven":
            continue
        elif a in _SIMPLE:
            allowed.append(a)
        else:
            return None, ()
    if choices and not allowed:
        return tuple({type(c) for c in choices}), tuple(choices)
    if choices:  # `str | Literal[...]` names suggestions, not a closed set
        allowed.extend(type(c) for c in choices)
    return tuple(dict.fromkeys(allowed)), ()


def type_problem(value: Any, param: Parameter) -> str | None:
    if param.choices:
        if value not in param.choices:
            return "must be one of " + ", ".join(repr(c) for c in param.choices)
        return None
    if param.allowed is None:
        return None
    ok = False
    for t in param.allowed:
        if t is bool:
            ok |= isinstance(value, bool)
        elif t is int:
            ok |= isinstance(value, int) and not isinstance(value, bool)
        elif t is float:
            ok |= isinstance(value, int | float) and not isinstance(value, bool)
        elif t is dict:
            ok |= isinstance(value, Mapping)
        else:
            ok |= isinstance(value, t)
    if ok:
        return None
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}
    names |= {list: "a list", dict: "a table"}
    return "must be " + " or ".join(names.get(t, t.__name__) for t in param.allowed)


def url_problem(key: str, value: Any) -> str | None:
    """A `*url` option must be an absolute http(s)/ws(s) URL (empty means the provider's default)."""
    if not key.endswith("url") or not isinstance(value, str) or value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme in URL_SCHEMES and parts.netloc:
        return None
    return f"must be a URL such as https://host/path (scheme {', '.join(URL_SCHEMES)})"


def table_problems(module: str, stage: str, table: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for every option in `[<stage>.<module>]` the constructor would refuse."""
    import difflib

    sig = signature(module, stage)
    settable = sorted(n for n in sig.parameters if n not in INJECTED)
    out: list[tuple[str, str]] = []
    for key, value in table.items():
        if key == API_KEY_ENV:
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
                out.append((key, 'must name an environment variable, e.g. "GROQ_API_KEY"'))
            continue
        if key in INJECTED:
            why = (
                f"secrets never go in settings: put the key in the environment, .env or "
                f".secrets.toml and name its variable with {API_KEY_ENV}"
                if key == "api_key"
                else "set by voice-handler (the shared HTTP pool and client)"
            )
            out.append((key, why))
            continue
        if not sig.accepts(key):
            hint = difflib.get_close_matches(key, settable, n=1)
            out.append(
                (
                    key,
                    f"unknown option of {NAMESPACE}.{module}.{STAGE_CLASSES[stage]}"
                    + (f"; did you mean {hint[0]!r}?" if hint else "")
                    + f"; accepted: {', '.join(settable)}",
                )
            )
            continue
        param = sig.parameters.get(key)
        bad = (type_problem(value, param) if param else None) or url_problem(key, value)
        if bad:
            out.append((key, bad))
    for name, param in sig.parameters.items():
        if param.required and name not in table and name not in INJECTED:
            out.append(
                (
                    name,
                    f"required by {NAMESPACE}.{module}.{STAGE_CLASSES[stage]}; set it in [{stage}.{module}]",
                )
            )
    return out


@functools.cache
def documented_secret(module: str, stage: str) -> str | None:
    """The one `*_API_KEY` variable the constructor's source (docstring or code) names, else None
    (none, or several: then the config names it with `api_key_env`)."""
    target = constructor(module, stage)
    init = target.__init__ if inspect.isclass(target) else target
    try:
        source = inspect.getsource(init)
    except (OSError, TypeError):
        return None
    names = set(API_KEY_VAR.findall(source))
    if not names:
        # the class may delegate to a helper in its module (groq's `_get_api_key`)
        try:
            names = set(API_KEY_VAR.findall(inspect.getsource(inspect.getmodule(init))))  # type: ignore[arg-type]
        except (OSError, TypeError):
            names = set()
    return names.pop() if len(names) == 1 else None


def secret_name(module: str, stage: str, table: Mapping[str, Any]) -> str | None:
    named = table.get(API_KEY_ENV)
    if isinstance(named, str) and named:
        return named
    if "api_key" not in signature(module, stage).parameters:
        return None
    return documented_secret(module, stage)


# ------------------------------------------------------------------------- building


def options(module: str, stage: str, table: Mapping[str, Any], common: Mapping[str, Any]) -> dict[str, Any]:
    """The provider's options: its table, over the stage's shared keys whose names (or aliases)
    the constructor takes (`llm.temperature`; `llm.max_tokens` as `max_completion_tokens`)."""
    sig = signature(module, stage)
    aliases = COMMON_ALIASES.get(stage, {})
    out: dict[str, Any] = {}
    for key, value in common.items():
        param = aliases.get(key, key)
        if param in sig.parameters and param not in INJECTED:
            out[param] = value
    out.update(table)
    return out


def kwargs(module: str, stage: str, options: Mapping[str, Any], runtime: Any) -> dict[str, Any]:
    """The constructor's keyword arguments: the options, and what voice-handler injects (the API
    key from the secrets, the pooled HTTP session, no SDK-level retries)."""
    sig = signature(module, stage)
    out = {k: v for k, v in options.items() if k != API_KEY_ENV}
    secret = secret_name(module, stage, options)
    value = runtime.secret(secret) if secret else None
    if value and "api_key" in sig.parameters:
        out["api_key"] = value
    if "http_session" in sig.parameters and getattr(runtime, "http_session", None) is not None:
        out["http_session"] = runtime.http_session
    if "max_retries" in sig.parameters and "max_retries" not in options:
        out["max_retries"] = 0
    return out


def build(module: str, stage: str, options: Mapping[str, Any], runtime: Any) -> Any:
    return constructor(module, stage)(**kwargs(module, stage, options, runtime))


def endpoints(module: str, stage: str, options: Mapping[str, Any]) -> list[str]:
    """The provider's URL for pre-warming, when it speaks through the shared aiohttp pool (a
    connection warmed there is one it will reuse)."""
    sig = signature(module, stage)
    if "http_session" not in sig.parameters:
        return []
    url = options.get("base_url")
    if not url:
        target = constructor(module, stage)
        default = inspect.signature(target).parameters.get("base_url")
        url = default.default if default is not None else None
    return [url] if isinstance(url, str) and url else []
