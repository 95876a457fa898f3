"""Layered configuration: Dynaconf merges, this module validates and remembers where values came from.

Precedence, low to high: settings.toml [default] -> environments/<env>.toml -> .secrets.toml ->
.env -> environment variables (nested `HANDLER_SECTION__KEY`, or the guide's flat keys such as
MIN_ENDPOINTING_DELAY). At each of the first two levels the shipped file (handler/defaults/) comes
first and the directory's own (the current one, or $VOICE_HANDLER_ROOT) over it: a directory's
settings.toml changes the defaults, and every environment file, shipped or its own, applies over
them (so a full copy of settings.toml as a template cannot undo production.toml).
`ENV_FOR_DYNACONF` picks the environment; unset means dev.

Schema: every core key and its type is whatever settings.toml [default] declares (each key has a
one-line comment there), plus the range checks below. Provider tables (`[<stage>.<name>]`) are
checked by the registry, which knows the providers.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handler import config_inputs, redaction
from handler.hookspecs import STAGES
from handler.nested import walk as _walk

ENV_VAR = "ENV_FOR_DYNACONF"
DEFAULT_ENV = "dev"
PREFIX = "HANDLER"
ROOT_VAR = "VOICE_HANDLER_ROOT"

# The guide's flat .env keys -> the nested key each one sets.
FLAT_KEYS = {
    "MIN_ENDPOINTING_DELAY": "turn.min_endpointing_delay",
    "INTERRUPTION_THRESHOLD": "turn.interruption_threshold",
    "ENABLE_INTERRUPTIONS": "turn.interruptions_enabled",
    "HTTP_TIMEOUT": "http.timeout",
    "HTTP_MAX_CONNECTIONS": "http.max_connections",
    "MAX_RETRIES": "retry.max_retries",
    "MAX_TOKENS": "llm.max_tokens",
    "LOG_LEVEL": "logging.level",
}

# Secrets are read from the environment, .env or .secrets.toml only, and never printed.
SECRETS = (
    "OPENAI_API_KEY",
    "ELEVEN_API_KEY",
    "SONIOX_API_KEY",
    "LIVEKIT_URL",
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
)
LIVEKIT_SECRETS = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")


def is_secret_name(name: str) -> bool:
    """A variable that is a secret: one of SECRETS, or by its name (handler/redaction.py);
    read like SECRETS, and redacted from every output."""
    return name in SECRETS or redaction.is_secret_var(name)


DEFAULT_SOURCE = "settings.toml [default]"


@dataclass(frozen=True)
class Problem:
    key: str
    value: Any
    source: str
    message: str

    def __str__(self) -> str:
        where = f" (from {self.source})" if self.source else ""
        value = REDACTED if redaction.hidden(self.key, self.source) else self.value
        shown = "" if self.value is MISSING else f" = {value!r}"
        return f"{self.key}{shown}{where}: {self.message}"


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


class ConfigError(Exception):
    """A user's configuration mistake: every problem found, reported at once (exit status 2).
    `secrets` are values to keep out of the report (a key pasted into a setting, say)."""

    def __init__(self, problems: list[Problem], secrets: Iterable[str] = ()):
        self.problems = problems
        self.secrets = list(secrets)
        super().__init__("\n".join(str(p) for p in problems))

    def lines(self) -> list[str]:
        return [redact(str(p), self.secrets) for p in self.problems]


REDACTED = redaction.REDACTED
redact = redaction.redact


DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"
"""The defaults that ship with the package: settings.toml and environments/ (in a checkout, links to
the top-level ones; in a wheel, copies of them)."""


def find_root() -> Path:
    """The directory whose own settings.toml, environments/, .secrets.toml and .env layer over the
    shipped defaults: $VOICE_HANDLER_ROOT, else the current directory (which may hold none of them)."""
    named = os.environ.get(ROOT_VAR)
    if not named:
        return Path.cwd()
    if not Path(named).is_dir():
        raise ConfigError(
            [Problem(ROOT_VAR, named, f"environment variable {ROOT_VAR}", "is not a directory")]
        )
    return Path(named)


def available_envs(root: Path) -> list[str]:
    """The shipped environments and the directory's own (which may add one, e.g. staging)."""
    return sorted({p.stem for d in (DEFAULTS_DIR, root) for p in (d / "environments").glob("*.toml")})


def _settings_files(root: Path, env: str) -> list[tuple[str, Path]]:
    """(label, path) of each settings file, lowest precedence first: the shipped settings.toml, the
    directory's own, the shipped environments/<env>.toml, the directory's own. A directory's file is
    labelled with its full path; one that is the shipped file (a checkout's) is read once."""
    files: list[tuple[str, Path]] = []
    for name in ("settings.toml", f"environments/{env}.toml"):
        shipped, own = DEFAULTS_DIR / name, root / name
        if shipped.is_file():
            files.append((name, shipped))
        if own.is_file() and not (shipped.is_file() and own.resolve() == shipped.resolve()):
            files.append((str(own), own))
    if not files or files[0][1] != DEFAULTS_DIR / "settings.toml":
        # a broken installation, not a user's mistake: the schema itself is missing
        raise RuntimeError(f"voice-handler's defaults are missing: {DEFAULTS_DIR / 'settings.toml'}")
    return files


def _layer_label(label: str, section: str, env: str) -> str:
    # an environment file's own section keeps the file's name alone ("environments/fast.toml")
    return label if section == env and label.endswith(f"environments/{env}.toml") else f"{label} [{section}]"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([Problem(str(path), MISSING, "", f"is not valid TOML: {e}")]) from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(
            [
                Problem(
                    str(path),
                    MISSING,
                    "",
                    "is nested too deeply to read (arrays or tables inside each other)",
                )
            ]
        ) from None
    except OSError as e:
        raise ConfigError([Problem(str(path), MISSING, "", f"cannot be read: {e}")]) from None


def _read_layer(path: Path, envs: list[str]) -> dict[str, Any]:
    """A TOML layer whose environment sections ([default], [<env>]) must be tables: Dynaconf
    would crash on anything else."""
    raw = _read_toml(path)
    bad = [
        Problem(f"{path.name} [{k}]", v, str(path), "must be a table of settings")
        for k, v in raw.items()
        if k.lower() in {"default", "global", *envs} and not isinstance(v, Mapping)
    ]
    if bad:
        raise ConfigError(bad)
    return raw


def _read_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dynaconf.vendor.dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _parse_env_value(raw: str) -> Any:
    # The same parsing Dynaconf applies to HANDLER_* variables: TOML literals, else the string.
    from dynaconf.utils.parse_conf import parse_conf_data

    return parse_conf_data(raw, tomlfy=True, box_settings={})


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def _get_path(data: Mapping[str, Any], path: str, default: Any = MISSING) -> Any:
    node: Any = data
    for p in path.split("."):
        if not isinstance(node, Mapping) or p not in node:
            return default
        node = node[p]
    return node


def _nested(path: str, value: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    _set_path(data, path, value)
    return data


def _merge(
    layers: list[tuple[str, dict[str, Any]]], shown_last: int = 0
) -> tuple[dict[str, Any], dict[str, str]]:
    """The one merger: Dynaconf, fed every layer's values in precedence order, each labelled with
    its source. Tables merge key by key; any other value, a list included, replaces the one below
    it (a higher layer's `fallback = [...]` is the whole chain, not an addition to it). Returns the
    merged settings and the source of every leaf (the label of the last layer that set it, as
    Dynaconf's history records it: `dynaconf.get_history`)."""
    from dynaconf import Dynaconf  # type: ignore[attr-defined]

    # every layer comes from here: Dynaconf reads no file, no .env and no variable on its own
    # (the prefix is one nothing sets)
    dyn = Dynaconf(
        environments=False,
        settings_files=[],
        load_dotenv=False,
        envvar_prefix="VOICE_HANDLER_NOT_READ",
        merge_enabled=False,
    )
    sources: dict[str, str] = {}
    for label, layer in layers:
        for path, value in _walk(layer, keep_empty=True):
            if isinstance(value, Mapping):  # an empty table: its name, keeping what is below it
                if dyn.get(path) is None:
                    dyn.set(path, {}, loader_identifier=label)
                continue
            dyn.set(path, value, loader_identifier=label, merge=False)
            sources[path] = label
    ours = {k.lower() for layer in layers for k in layer[1]}
    merged = {
        k: v for k, v in _lower_keys(dyn.as_dict()).items() if k in ours and not is_secret_name(k.upper())
    }
    # keys in the files' order; those only the first `shown_last` layers (the plugins' defaults)
    # have come after them
    ordered: dict[str, Any] = {}
    for _, layer in layers[shown_last:] + layers[:shown_last]:
        for path, _ in _walk(layer, keep_empty=True):
            value = _get_path(merged, path)
            if value is not MISSING and _get_path(ordered, path) is MISSING:
                _set_path(ordered, path, value)
    return ordered, sources


def _lower_keys(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {str(k).lower(): _lower_keys(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_lower_keys(v) for v in data]
    return data


class Settings:
    """The effective configuration of one environment, with the source of every value."""

    def __init__(
        self,
        *,
        env: str,
        root: Path,
        data: dict[str, Any],
        defaults: dict[str, Any],
        sources: dict[str, str],
        secrets: dict[str, tuple[str, str]],
        lookup: Callable[[str], tuple[str, str] | None] | None = None,
    ):
        self.env = env
        self.root = root
        self.data = data
        self.defaults = defaults
        self.sources = sources
        self._secrets = secrets
        self._lookup = lookup

    def get(self, path: str, default: Any = None) -> Any:
        value = _get_path(self.data, path)
        return default if value is MISSING else value

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.get(name, {})
        return dict(value) if isinstance(value, Mapping) else {}

    def source(self, path: str) -> str:
        """Where a value came from: the deepest recorded source on its path."""
        parts = path.split(".")
        for i in range(len(parts), 0, -1):
            src = self.sources.get(".".join(parts[:i]))
            if src:
                return src
        return DEFAULT_SOURCE

    def _find_secret(self, name: str) -> tuple[str, str] | None:
        found = self._secrets.get(name)
        if found is None and self._lookup is not None:
            # a variable named by the configuration (`api_key_env`, `telemetry.headers_env`):
            # read on first use, then remembered so log redaction knows its value
            found = self._lookup(name)
            if found:
                self._secrets[name] = found
        return found

    def secret(self, name: str) -> str | None:
        found = self._find_secret(name)
        return found[0] if found else None

    def secret_source(self, name: str) -> str | None:
        found = self._find_secret(name)
        return found[1] if found else None

    def adopt_secret(self, name: str, value: str, source: str) -> None:
        """Take `value` as the secret `name` (a provider's key from its own table)."""
        self._secrets[name] = (value, source)

    def secret_values(self) -> list[str]:
        """Every secret value known to this process, for redaction: the secret variables', and
        those held in settings (by their key's name, or read from .secrets.toml)."""
        return [v for v, _ in self._secrets.values() if v] + redaction.setting_secrets(self.data, self.source)

    def with_stand_ins(self, values: Mapping[str, str], source: str) -> Settings:
        """A copy where each secret in `values` that is not set has that value, from `source` (the
        provider fakes accept any key). Nothing is written to os.environ."""
        secrets = dict(self._secrets)
        for name, value in values.items():
            if self._find_secret(name) is None:
                secrets[name] = (value, source)
        return Settings(
            env=self.env,
            root=self.root,
            data=self.data,
            defaults=self.defaults,
            sources=self.sources,
            secrets=secrets,
            lookup=self._lookup,
        )

    def with_overrides(self, overrides: Mapping[str, Any], source: str) -> Settings:
        """A copy with dotted-path overrides applied (used by `simulate` for scenario phrases)."""
        import copy

        data = copy.deepcopy(self.data)
        sources = dict(self.sources)
        for path, value in overrides.items():
            _set_path(data, path, value)
            sources[path] = source
        return Settings(
            env=self.env,
            root=self.root,
            data=data,
            defaults=self.defaults,
            sources=sources,
            secrets=self._secrets,
            lookup=self._lookup,
        )


Overrides = Mapping[str, Any] | Callable[[Settings], Mapping[str, Any]]
"""Dotted-path values a command puts over every layer; or a function of the loaded settings that
returns them (the provider fakes select each stage's cloud provider, keeping its backups)."""


def overridden(settings: Settings, overrides: Overrides | None, source: str) -> Settings:
    given = overrides(settings) if callable(overrides) else overrides
    return settings.with_overrides(given, source) if given else settings


def load(
    env: str | None = None,
    *,
    root: Path | None = None,
    below: Sequence[tuple[str, Mapping[str, Any]]] = (),
) -> Settings:
    """Load and merge every layer; raises ConfigError for an unknown environment or bad files.

    `below`: (source, settings) layers under every file, lowest first: the plugins' own defaults
    of their provider tables (`Registry.table_defaults`), which every file may change.
    Values are not validated here: call `validate` (core keys) and the registry's checks.
    """
    root = root or find_root()
    env_source = "--env option" if env else f"environment variable {ENV_VAR}"
    env = env or os.environ.get(ENV_VAR) or DEFAULT_ENV
    envs = available_envs(root)
    if env not in envs:
        # Dynaconf would silently fall back to [default] here; a typo must not run production
        # with development settings.
        hint = difflib.get_close_matches(env, envs, n=1)
        raise ConfigError(
            [
                Problem(
                    ENV_VAR,
                    env,
                    env_source,
                    f"unknown environment; allowed: {', '.join(envs)}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                )
            ]
        )

    # .env is read apart from the real environment (never copied into os.environ), so a value's
    # source can say "environment variable" or ".env" truthfully
    real_env = dict(os.environ)
    dotenv = _read_dotenv(root / ".env")
    files = _settings_files(root, env)
    secrets_path = root / ".secrets.toml"

    # each file's [default] section, then its [<env>] section: the order Dynaconf merges them in
    layers: list[tuple[str, dict[str, Any]]] = [(label, _lower_keys(data)) for label, data in below]
    schema = len(layers)  # the shipped settings.toml's [default]: the core keys and their types
    for label, file in files:
        raw = _read_layer(file, envs)
        for name in ("default", env):
            if isinstance(raw.get(name), Mapping):
                layers.append((_layer_label(label, name, env), _lower_keys(raw[name])))
    raw_secrets: dict[str, Any] = {}
    if secrets_path.is_file():
        raw = _read_layer(secrets_path, envs)
        # .secrets.toml may hold secrets at top level or in [default]/[<env>] sections.
        for section in (raw, raw.get("default", {}), raw.get(env, {})):
            if isinstance(section, Mapping):
                raw_secrets.update({k.upper(): v for k, v in section.items() if is_secret_name(k.upper())})
        for name in ("default", env):
            section = raw.get(name, {})
            if isinstance(section, Mapping):
                own = {k: v for k, v in section.items() if not is_secret_name(k.upper())}
                layers.append((".secrets.toml", _lower_keys(own)))

    # what Dynaconf would crash on, refused as the user's mistake: a variable nested too deeply
    # for its recursive parser (before it parses them), a template that fails (as it merges)
    if deep := config_inputs.too_deep(real_env, dotenv, PREFIX, _parse_env_value):
        reason = "is nested too deeply to read (arrays or tables inside each other)"
        raise ConfigError([Problem(name, MISSING, where, reason) for name, where in deep])
    # the environment's layers, lowest first: HANDLER_* variables from .env, then from the real
    # environment (which wins over .env)
    for name in sorted(set(dotenv) | set(real_env), key=lambda n: n in real_env):
        if name.startswith(PREFIX + "_") and name != PREFIX + "_ENV":
            path = name[len(PREFIX) + 1 :].lower().replace("__", ".")
            label = f"environment variable {name}" if name in real_env else f".env ({name})"
            layers.append((label, _nested(path, _parse_env_value(real_env.get(name, dotenv.get(name, ""))))))

    try:
        merged, sources = _merge(layers, shown_last=schema)
    except Exception as e:
        lazy = config_inputs.templates(layers, real_env, dotenv, PREFIX)
        if not lazy:
            raise  # not a template of the user's: a bug, with its traceback
        error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        raise ConfigError(
            [
                Problem(
                    key,
                    value,
                    where,
                    f"a {value.split()[0]} value Dynaconf could not evaluate ({error}); allowed: "
                    "a template over settings that exist, or a plain value",
                )
                for key, value, where in lazy
            ]
        ) from None
    problems: list[Problem] = []
    for name, path in FLAT_KEYS.items():
        if name in real_env:
            raw_value, label = real_env[name], f"environment variable {name}"
        elif name in dotenv:
            raw_value, label = dotenv[name], f".env ({name})"
        else:
            continue
        value = _parse_env_value(raw_value)
        nested = f"{PREFIX}_{path.upper().replace('.', '__')}"
        if nested in real_env or nested in dotenv:
            current = _get_path(merged, path)
            if current != value:
                problems.append(
                    Problem(
                        path,
                        value,
                        label,
                        f"also set to {current!r} by {nested}; set one of them, not both",
                    )
                )
                continue
        _set_path(merged, path, value)
        sources[path] = label

    def lookup(name: str) -> tuple[str, str] | None:
        if real_env.get(name):
            return real_env[name], f"environment variable {name}"
        if dotenv.get(name):
            return dotenv[name], ".env"
        if raw_secrets.get(name):
            return str(raw_secrets[name]), ".secrets.toml"
        return None

    secrets: dict[str, tuple[str, str]] = {}
    named = {
        n for n in (*real_env, *dotenv, *raw_secrets) if is_secret_name(n) and not n.startswith(PREFIX + "_")
    }
    # variables the configuration names as holding a secret (`api_key_env`, `headers_env`)
    named |= {v for path, v in _walk(merged) if path.endswith("_env") and isinstance(v, str) and v}
    for name in sorted(named | set(SECRETS)):
        found = lookup(name)
        if found:
            secrets[name] = found

    if problems:
        raise ConfigError(problems)
    return Settings(
        env=env,
        root=root,
        data=merged,
        defaults=layers[schema][1],
        sources=sources,
        secrets=secrets,
        lookup=lookup,
    )


# ---------------------------------------------------------------- validation of core keys


Check = tuple[Callable[[Any], bool], str]


def _between(lo: float, hi: float) -> Check:
    return (lambda v: lo <= v <= hi, f"a number from {lo} to {hi}")


def _one_of(*allowed: str) -> Check:
    return (lambda v: v in allowed, "one of " + ", ".join(repr(a) for a in allowed))


def _is_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


_NON_NEGATIVE: Check = (lambda v: v >= 0, "a number 0 or above")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Ranges: what a value may be beyond its type. Upper bounds catch absurd values (a 10-minute
# endpointing delay is a typo, not a tuning choice).
CHECKS: dict[str, Check] = {
    "turn.min_endpointing_delay": _between(0.0, 10.0),
    "turn.max_endpointing_delay": _between(0.0, 30.0),
    "turn.endpointing_mode": _one_of("fixed", "dynamic"),
    "turn.interruption_threshold": _between(0.0, 1.0),
    "turn.min_interruption_duration": _between(0.0, 5.0),
    "turn.false_interruption_timeout": _between(0.0, 30.0),
    "turn.aec_warmup_duration": _between(0.0, 30.0),
    "turn.min_interruption_words": _between(0, 20),
    "vad.min_speech_duration": _between(0.0, 5.0),
    "vad.min_silence_duration": _between(0.0, 5.0),
    "vad.activation_threshold": _between(0.0, 1.0),
    "llm.max_tokens": _between(1, 100_000),
    "llm.temperature": _between(0.0, 2.0),
    "http.timeout": _between(0.1, 600.0),
    "http.max_connections": _between(1, 10_000),
    "http.keepalive_timeout": _between(0.0, 3600.0),
    "retry.max_retries": _between(0, 10),
    "retry.backoff_initial": _between(0.0, 60.0),
    "retry.backoff_max": _between(0.0, 600.0),
    "retry.jitter": _between(0.0, 60.0),
    "resilience.probe_initial": _between(0.0, 600.0),
    "resilience.probe_max": _between(0.0, 3600.0),
    "resilience.down_for": _between(0.0, 600.0),
    "resilience.hold_after": _between(0.0, 120.0),
    "resilience.apology_timeout": _between(0.0, 120.0),
    "logging.level": (lambda v: str(v).upper() in _LOG_LEVELS, "one of " + ", ".join(_LOG_LEVELS)),
    "logging.format": _one_of("text", "json"),
    "logging.identities": _one_of("hashed", "clear"),
    "room.input_sample_rate": (
        lambda v: v in (8000, 16000, 24000, 48000),
        "one of 8000, 16000, 24000, 48000 (Hz)",
    ),
    "room.input_frame_ms": (lambda v: v in (10, 20, 50, 100), "one of 10, 20, 50, 100"),
    "worker.load_threshold": (
        lambda v: 0 < v <= 1 or v == float("inf"),
        "a number above 0 and at most 1, or inf (never refuse a job)",
    ),
    "worker.num_idle_processes": _between(0, 64),
    "worker.job_memory_warn_mb": _NON_NEGATIVE,
    "worker.job_memory_limit_mb": _NON_NEGATIVE,
    "worker.drain_timeout": _NON_NEGATIVE,
    "worker.host": (
        lambda v: v == "localhost" or _is_ip(v),
        'an IP address of this machine to listen on ("127.0.0.1", "0.0.0.0" for every interface, "::") '
        'or "localhost"',
    ),
    "worker.port": _between(0, 65535),
    "worker.prometheus_port": _between(0, 65535),
    "worker.agent_name": (lambda v: bool(str(v).strip()), "a non-empty name"),
    "worker.job_executor": _one_of("process", "thread"),
    "worker.reconnect_give_up": _between(0, 7 * 24 * 3600),
    "telemetry.protocol": _one_of("http", "grpc"),
    "telemetry.sample_ratio": _between(0.0, 1.0),
    "telemetry.export_timeout": _between(0.1, 60.0),
    "telemetry.max_queue_size": _between(1, 1_000_000),
}


def type_problem(value: Any, default: Any) -> str | None:
    """Whether `value` has the type of `default` (ints are accepted where floats are)."""
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, want = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif isinstance(default, float):
        ok, want = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, want = isinstance(value, str), "a string"
    elif isinstance(default, list):
        ok, want = isinstance(value, list), "a list"
    else:
        return None
    return None if ok else f"must be {want}"


def unknown_key_problem(key: str, allowed: list[str]) -> str:
    hint = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
    return "unknown key" + (
        f"; did you mean {hint[0]!r}?" if hint else f"; allowed: {', '.join(sorted(allowed))}"
    )


def validate(settings: Settings) -> list[Problem]:
    """Core keys: unknown sections and keys, types, ranges and cross-key rules."""
    problems: list[Problem] = []
    defaults = settings.defaults

    def add(path: str, value: Any, message: str) -> None:
        problems.append(Problem(path, value, settings.source(path), message))

    for section, values in settings.data.items():
        if section not in defaults:
            add(section, MISSING, unknown_key_problem(section, list(defaults)))
            continue
        if not isinstance(values, Mapping):
            add(section, values, "must be a table of settings")
            continue
        known = defaults[section]
        for key, value in values.items():
            path = f"{section}.{key}"
            if section in STAGES and isinstance(value, Mapping):
                continue  # a provider's own table: the registry checks it
            if key not in known:
                add(
                    path,
                    value,
                    unknown_key_problem(key, [k for k in known if not isinstance(known[k], Mapping)]),
                )
                continue
            bad_type = type_problem(value, known[key])
            if bad_type:
                add(path, value, bad_type)
                continue
            check = CHECKS.get(path)
            if check and not check[0](value):
                add(path, value, f"must be {check[1]}")

    lo = settings.get("turn.min_endpointing_delay")
    hi = settings.get("turn.max_endpointing_delay")
    if (
        isinstance(lo, int | float)
        and isinstance(hi, int | float)
        and not {p.key for p in problems} & {"turn.min_endpointing_delay", "turn.max_endpointing_delay"}
        and lo > hi
    ):
        add(
            "turn.min_endpointing_delay",
            lo,
            f"must not exceed turn.max_endpointing_delay ({hi!r}, "
            f"from {settings.source('turn.max_endpointing_delay')})",
        )
    health, metrics = settings.get("worker.port"), settings.get("worker.prometheus_port")
    if (
        metrics
        and metrics == health
        and not {p.key for p in problems} & {"worker.port", "worker.prometheus_port"}
    ):
        add(
            "worker.prometheus_port",
            metrics,
            f"must differ from worker.port, the health-check port (from {settings.source('worker.port')})",
        )
    from handler.observe import telemetry
    from handler.records import checks as records_checks

    for key, value, message in telemetry.problems(settings) + records_checks.problems(settings):
        if key.startswith(("telemetry.", "records.")):
            add(key, value, message)
        else:  # a secret: named, never shown
            problems.append(Problem(key, MISSING, "", message))
    return problems


def missing_livekit(settings: Settings, why: str) -> list[Problem]:
    """A problem for each LiveKit setting a command needs and is not set; `why` says what for."""
    return [
        Problem(
            name,
            MISSING,
            "",
            f"{why}; set it in the environment, .env or .secrets.toml (export {name}=...)",
        )
        for name in LIVEKIT_SECRETS
        if not settings.secret(name)
    ]
