"""The plugin registry: every plugin, built-in or third-party, arrives through the entry-point group
`voice_handler`; each declares providers by stage and name, and config picks them by name."""

from __future__ import annotations

import importlib
import os
import weakref
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from importlib import metadata
from typing import Any

import pluggy

from handler import hookspecs, livekit_plugins, redaction
from handler.config import (
    DEFAULT_ENV,
    ENV_VAR,
    MISSING,
    REDACTED,
    ConfigError,
    Overrides,
    Problem,
    Settings,
    is_secret_name,
    load,
    missing_livekit,
    overridden,
    type_problem,
    unknown_key_problem,
    validate,
)
from handler.hookspecs import SINK_STAGES, STAGES, Provider, selector

ENTRY_POINT_GROUP = "voice_handler"
OWN_DISTRIBUTION = "voice-handler"
ALLOW_VAR = "VOICE_HANDLER_PLUGINS"
"""Comma-separated entry-point or distribution names of third-party plugins to load; empty loads
none; unset loads every installed plugin, except in production (PRODUCTION_ENVS), where it loads
none: a package installed into the image, or by a dependency, is not run in the worker unless it
is named. Built-ins are always loaded. Installed livekit plugins (`livekit-plugins-*`) count as
third-party: their module or distribution name allows them."""
PRODUCTION_ENVS = frozenset({"production"})

BUILT_IN = "built-in"
TABLE_KEY = "api_key"
"""A provider's key may sit in its own table (`[default.llm.openai] api_key`, Dynaconf's way)
when it comes from a secret place: .secrets.toml, .env or the environment, never a settings file."""
SECRET_PLACES = (redaction.SECRETS_FILE, ".env", "environment variable")


class PluginLoadError(Exception):
    """A plugin could not be loaded or declared something invalid (names the plugin)."""


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-")


class Registry:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs.Specs)
        self._providers: dict[tuple[str, str], Provider] = {}
        self.overridden: list[Provider] = []
        """Providers shadowed by a higher-priority registration of the same stage and name."""
        self._origins: dict[int, str] = {}
        self._labels: dict[tuple[str, str], str] = {}
        """Who declared each provider, as a source label: "plugin soniox (built-in)"."""
        self.livekit: list[livekit_plugins.Found] = []
        """Installed livekit plugin packages offered as providers (see `discover_livekit`)."""
        self.not_allowed: list[str] = []
        """Installed third-party plugins left out by the allowlist ("name (distribution)")."""
        self.allowlist_required = False
        """Production with ALLOW_VAR unset: third-party plugins load only when named."""
        self._options: weakref.WeakKeyDictionary[Settings, dict[tuple[str, str], dict[str, Any]]] = (
            weakref.WeakKeyDictionary()
        )

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, *, allow: str | None = None, env: str | None = None) -> Registry:
        """Built-ins and the allowed third-party plugins; `env` is the environment the plugins
        will run under (production allows only what ALLOW_VAR names)."""
        registry = cls()
        allow = os.environ.get(ALLOW_VAR) if allow is None else allow
        if allow is None and env in PRODUCTION_ENVS:
            allow, registry.allowlist_required = "", True
        allowed = None if allow is None else {_normalize(a) for a in allow.split(",") if a.strip()}
        own_found = False
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else "unknown distribution"
            built_in = _normalize(dist) == OWN_DISTRIBUTION
            own_found |= built_in
            if (
                not built_in
                and allowed is not None
                and not ({_normalize(ep.name), _normalize(dist)} & allowed)
            ):
                registry.not_allowed.append(f"{ep.name} ({dist})")
                continue
            try:
                plugin = ep.load()
            except Exception as e:
                raise PluginLoadError(
                    f"plugin {ep.name!r} from {dist} failed to load ({ep.value}): {e}"
                ) from e
            registry.add(plugin, name=ep.name, origin=BUILT_IN if built_in else dist)
        if not own_found:
            raise PluginLoadError(
                "voice-handler's built-in plugins are not installed as entry points; "
                "install the project first: pip install -e ."
            )
        registry.collect()
        registry.discover_livekit(allowed)
        return registry

    def discover_livekit(self, allowed: AbstractSet[str] | None = None) -> None:
        """Offer each installed livekit plugin's STT/LLM/TTS/VAD class as a provider named after its
        module, unless a voice-handler plugin already registers that stage and name (it wins, as
        installed plugins win over built-ins). Reads files only; nothing is imported here."""
        installed = livekit_plugins.discover()
        self.livekit = [
            f
            for f in installed
            if allowed is None or {_normalize(f.module), _normalize(f.distribution)} & allowed
        ]
        self.not_allowed += [f"{f.module} ({f.distribution})" for f in installed if f not in self.livekit]
        for found in self.livekit:
            for stage in found.stages:
                provider = Provider(
                    stage=stage,
                    name=found.module,
                    factory=_livekit_factory(found.module, stage),
                    endpoints=_livekit_endpoints(found.module, stage),
                    origin=found.distribution,
                    livekit_module=found.module,
                    preload=(f"{livekit_plugins.NAMESPACE}.{found.module}",),
                )
                if (stage, found.module) in self._providers:
                    self.overridden.append(provider)
                else:
                    self._providers[(stage, found.module)] = provider

    def add(self, plugin: Any, *, name: str, origin: str) -> None:
        """Register one plugin object (a module or instance with hookimpls)."""
        if isinstance(plugin, str):
            plugin = importlib.import_module(plugin)
        self.pm.register(plugin, name=name)
        self._origins[id(plugin)] = origin

    def collect(self) -> None:
        """Ask every plugin for its providers; the first registration of a stage/name wins, so a
        plugin that runs earlier (built-ins are trylast) overrides a built-in."""
        self.pm.check_pending()  # a hookimpl that matches no spec is a typo: fail loudly
        self._providers.clear()
        self.overridden.clear()
        impls = self.pm.hook.register_providers.get_hookimpls()
        for impl in reversed(impls):  # pluggy calls the last registered / tryfirst first
            origin = self._origins.get(id(impl.plugin), impl.plugin_name)
            impl.function(register=self._registrar(origin, impl.plugin_name))

    def _registrar(self, origin: str, plugin_name: str) -> hookspecs.Register:
        def register(stage: str, name: str, factory: hookspecs.Factory[Any], **declaration: Any) -> None:
            who = f"plugin {plugin_name!r} ({origin})"
            if stage not in STAGES:
                raise PluginLoadError(f"{who} registers unknown stage {stage!r}; stages: {', '.join(STAGES)}")
            if not callable(factory):
                raise PluginLoadError(f"{who}: factory for {stage}/{name} is not callable")
            filled = sorted({"origin", "livekit_module"} & set(declaration))
            if filled:
                raise PluginLoadError(f"{who}: {stage}/{name} sets {', '.join(filled)} (the registry's)")
            try:
                provider = Provider(stage=stage, name=name, factory=factory, origin=origin, **declaration)
            except TypeError as e:  # a field Provider does not have
                raise PluginLoadError(f"{who}: {stage}/{name}: {e}") from None
            if (stage, name) in self._providers:
                self.overridden.append(provider)
            else:
                self._providers[(stage, name)] = provider
                self._labels[(stage, name)] = f"plugin {plugin_name} ({origin})"

        return register

    # ------------------------------------------------------------------ queries

    def names(self, stage: str) -> list[str]:
        return sorted(n for s, n in self._providers if s == stage)

    def get(self, stage: str, name: str) -> Provider:
        return self._providers[(stage, name)]

    def table_defaults(self) -> list[tuple[str, dict[str, Any]]]:
        """Each provider's declared option defaults as a settings layer under every file, labelled
        with the plugin that declared them (`config.load`'s `below`)."""
        return [
            (self._labels.get(key, p.origin), {p.stage: {p.name: dict(p.options)}})
            for key, p in sorted(self._providers.items())
            if p.options
        ]

    def plugins(self) -> list[tuple[str, str]]:
        """(name, origin) of every registered plugin, providers and observers alike, and of every
        livekit plugin package offered as providers."""
        return sorted(
            [
                (name, self._origins.get(id(plugin), "unknown"))
                for name, plugin in self.pm.list_name_plugin()
                if plugin is not None
            ]
            + [(f"livekit.plugins.{f.module}", f.distribution) for f in self.livekit]
        )

    def providers(self) -> list[Provider]:
        return [self._providers[k] for k in sorted(self._providers)]

    def selected(self, settings: Settings, stage: str) -> list[str]:
        """The provider names a stage uses, in order: its fallback chain (`<stage>.fallback`, the
        whole chain, `provider` first), else its one provider."""
        chain = settings.get(f"{stage}.fallback")
        if isinstance(chain, list) and chain:
            return [name for name in chain if isinstance(name, str)]
        name = settings.get(selector(stage))
        if isinstance(name, list):  # a sink stage: every one listed
            return [n for n in dict.fromkeys(name) if isinstance(n, str)]
        return [name] if isinstance(name, str) else []

    def options(self, settings: Settings, stage: str, name: str, *, copy: bool = True) -> dict[str, Any]:
        """The options a factory receives: provider defaults < stage keys < provider table. Computed
        once per settings object (checking them and the plan read the same); a copy unless `copy`
        is off (then read-only)."""
        known = self._options.setdefault(settings, {})
        if (stage, name) not in known:
            known[(stage, name)] = self._options_of(settings, stage, name)
        return dict(known[(stage, name)]) if copy else known[(stage, name)]

    def _options_of(self, settings: Settings, stage: str, name: str) -> dict[str, Any]:
        provider = self.get(stage, name)
        section = settings.section(stage)
        common = {k: v for k, v in section.items() if not isinstance(v, Mapping)}
        common.pop(selector(stage).split(".")[1], None)
        common.pop("fallback", None)  # the registry's business, not the provider's
        own = section.get(name, {})
        own = {k: v for k, v in own.items() if k != TABLE_KEY} if isinstance(own, Mapping) else {}
        if provider.livekit_module:  # a shared key only where the constructor has that parameter
            return livekit_plugins.options(provider.livekit_module, stage, own, common)
        # the provider's defaults are its table's lowest layer (settings loaded with the plugins'
        # defaults hold them in `own` already)
        return {**common, **(provider.options or {}), **own}

    # ------------------------------------------------------------------ validation

    def validate(
        self, settings: Settings, *, for_start: bool = False, skip_checks: AbstractSet[str] = frozenset()
    ) -> list[Problem]:
        """Provider names, provider tables, and the secrets of the selected providers."""
        problems: list[Problem] = []

        def add(path: str, value: Any, message: str) -> None:
            problems.append(Problem(path, value, settings.source(path), message))

        def add_secret(name: str, message: str) -> None:
            problems.append(Problem(name, MISSING, "", message))

        for stage in STAGES:
            names = self.names(stage)
            section = settings.section(stage)
            selecting = selector(stage)
            chosen = settings.get(selecting)
            if stage in SINK_STAGES:  # several at once: each must exist (config.validate checks the list)
                for name in chosen if isinstance(chosen, list) else []:
                    if name not in names:
                        add(
                            selecting,
                            chosen,
                            f"unknown {stage} sink {name!r}; "
                            f"available: {', '.join(names) or 'none installed'}",
                        )
            elif chosen not in names:
                add(
                    selecting,
                    chosen,
                    f"unknown {stage} provider; available: {', '.join(names) or 'none installed'}"
                    + self._allowlist_hint(),
                )
            for key, table in section.items():
                if not isinstance(table, Mapping):
                    continue
                path = f"{stage}.{key}"
                if key not in names:
                    add(
                        path,
                        "{...}",
                        f"table for unknown {stage} provider {key!r}; available: {', '.join(names)}",
                    )
                    continue
                problems.extend(self._table_problems(settings, stage, key, table))
            chain = section.get("fallback")
            if isinstance(chain, list) and chain:  # config.validate reports a non-list
                for message in self._chain_problems(stage, chain, chosen):
                    add(f"{stage}.fallback", chain, message)
            # the provider and every fallback: their own checks and their secrets
            used = [n for n in [chosen, *self.selected(settings, stage)] if isinstance(n, str)]
            if stage in SINK_STAGES:
                chosen = None  # every sink is a "sink", none the provider of a chain
            for name in dict.fromkeys(used):
                if name not in names:
                    continue
                provider = self.get(stage, name)
                role = "provider" if name == chosen else "fallback provider"
                if stage in SINK_STAGES:
                    role = "sink"
                why = provider.unavailable() if provider.unavailable else None
                if why:  # nothing else about it matters until it is installed
                    at = selecting if name == chosen or stage in SINK_STAGES else f"{stage}.fallback"
                    add(at, name, why)
                    continue
                if provider.livekit_module and not isinstance(section.get(name), Mapping):
                    # no table: still its required parameters, and whether it imports at all
                    problems.extend(self._table_problems(settings, stage, name, {}))
                if provider.validate and stage not in skip_checks:
                    for message in provider.validate(self.options(settings, stage, name, copy=False)):
                        key, _, text = message.partition(": ")
                        path = f"{stage}.{name}.{key}"
                        if any(p.key == path for p in problems):
                            continue  # the table's own check said it already: one message per key
                        add(path, settings.get(path, settings.get(f"{stage}.{key}")), text)
                secrets = provider.secrets
                if provider.livekit_module and not self._import_problem(provider):
                    own = section.get(name, {})
                    found = livekit_plugins.secret_name(
                        provider.livekit_module, stage, own if isinstance(own, Mapping) else {}
                    )
                    secrets = (found,) if found else ()
                for secret in secrets:
                    if not settings.secret(secret) and not _table_key(settings, stage, name):
                        add_secret(
                            secret,
                            f"required by {stage} {role} {name!r}; set it in the environment, "
                            f".env or .secrets.toml (export {secret}=...)",
                        )
        if for_start:
            problems += missing_livekit(settings, f"required by {START}")
        return problems

    def _allowlist_hint(self) -> str:
        if not (self.allowlist_required and self.not_allowed):
            return ""
        return (
            f" (in production, third-party plugins load only when {ALLOW_VAR} names them; installed, "
            f"not loaded: {', '.join(self.not_allowed)})"
        )

    def _chain_problems(self, stage: str, chain: list[Any], chosen: Any) -> list[str]:
        names = self.names(stage)
        out = []
        for name in chain:
            if name not in names:
                available = ", ".join(names) or "none installed"
                out.append(
                    f"unknown {stage} provider {name!r}; available: {available}{self._allowlist_hint()}"
                )
            elif chain.count(name) > 1:
                out.append(f"lists {name!r} more than once")
        if chain[0] != chosen:
            out.append(
                f"must start with {stage}.provider ({chosen!r}): it lists the whole chain in order, "
                "the provider first, then its backups"
            )
        return list(dict.fromkeys(out))  # a name listed twice is reported once

    def _import_problem(self, provider: Provider) -> str | None:
        """Why a discovered livekit plugin cannot be imported (a broken install), or None."""
        try:
            livekit_plugins.signature(provider.livekit_module or "", provider.stage)
        except Exception as e:
            return f"cannot import livekit.plugins.{provider.livekit_module} ({provider.origin}): {e}"
        return None

    def _table_problems(
        self, settings: Settings, stage: str, name: str, table: Mapping[str, Any]
    ) -> list[Problem]:
        provider = self.get(stage, name)
        if provider.livekit_module:
            broken = self._import_problem(provider)
            if broken:
                return [Problem(f"{stage}.{name}", "{...}", settings.source(f"{stage}.{name}"), broken)]
            out = []
            for key, msg in livekit_plugins.table_problems(provider.livekit_module, stage, table):
                if key == TABLE_KEY:
                    if _table_key(settings, stage, name):
                        continue  # the key, from a secret place: taken as the provider's key
                    msg = _misplaced_key(settings, f"{stage}.{name}")
                value = table.get(key, MISSING)
                if is_secret_name(key.upper()):
                    value = REDACTED  # a key pasted into a setting is still a key
                path = f"{stage}.{name}.{key}"
                out.append(Problem(path, value, settings.source(path), msg))
            return out
        schema = dict(provider.options or {})
        builtin_defaults = settings.defaults.get(stage, {}).get(name, {})
        schema.update(builtin_defaults)
        out = []
        for key, value in table.items():
            path = f"{stage}.{name}.{key}"
            if key == TABLE_KEY and provider.secrets:
                if not _table_key(settings, stage, name):
                    out.append(Problem(path, value, settings.source(path), _misplaced_key(settings, path)))
                continue
            if key not in schema:
                out.append(
                    Problem(path, value, settings.source(path), unknown_key_problem(key, list(schema)))
                )
                continue
            bad = type_problem(value, schema[key]) or livekit_plugins.url_problem(key, value)
            if bad:
                out.append(Problem(path, value, settings.source(path), bad))
        return out

    # ------------------------------------------------------------------ building

    def build(self, stage: str, settings: Settings, runtime: Any, name: str | None = None) -> Any:
        name = name or settings.get(selector(stage))
        provider = self.get(stage, name)
        return provider.factory(self.options(settings, stage, name), runtime)

    def preload_modules(self, settings: Settings) -> list[str]:
        """Modules a job imports to build its stages: every selected provider's (fallbacks
        included), its factory's module first. Importing them in the job, on its event loop at the
        call's start, cost a call about 1-2 CPU seconds (measurements/job_profile.py); the worker
        has its forkserver import them once instead (`handler.pipeline.worker.make_server`)."""
        modules: list[str] = []
        for stage in STAGES:
            for name in self.selected(settings, stage):
                provider = self._providers.get((stage, name))
                if provider is not None:
                    modules += [getattr(provider.factory, "__module__", ""), *provider.preload]
        return [m for m in dict.fromkeys(modules) if m and m != "__main__"]

    def endpoints(self, settings: Settings) -> list[str]:
        """URLs of the selected providers, for connection pre-warming. Primaries only, as livekit's
        fallback adapters warm only theirs: backups serve only when the primary fails."""
        urls: list[str] = []
        for stage in STAGES:
            for name in self.selected(settings, stage)[:1]:
                provider = self._providers.get((stage, name))
                if provider and provider.endpoints:
                    urls.extend(provider.endpoints(self.options(settings, stage, name, copy=False)))
        return urls


def _table_key(settings: Settings, stage: str, name: str) -> str | None:
    """The provider's key from its own table, when it came from a secret place."""
    path = f"{stage}.{name}.{TABLE_KEY}"
    value = settings.get(path)
    if isinstance(value, str) and value and settings.source(path).startswith(SECRET_PLACES):
        return value
    return None


def _misplaced_key(settings: Settings, path: str) -> str:
    return (
        f"a key never goes in a settings file ({settings.source(path)}): put it in .secrets.toml "
        f"([default.{path.rsplit('.', 1)[0]}] {TABLE_KEY} = ...), .env or the environment"
    )


def adopt_table_keys(settings: Settings, registry: Registry) -> None:
    """A selected provider's key from its table becomes the secret its factory reads (the table,
    the more specific place, wins over the provider's variable)."""
    for stage in STAGES:
        for name in registry.selected(settings, stage):
            value = _table_key(settings, stage, name)
            if not value or name not in registry.names(stage):
                continue
            provider = registry.get(stage, name)
            names = provider.secrets
            if provider.livekit_module:
                table = settings.section(stage).get(name, {})
                found = livekit_plugins.secret_name(provider.livekit_module, stage, table)
                names = (found,) if found else ()
            for secret in names:
                path = f"{stage}.{name}.{TABLE_KEY}"
                settings.adopt_secret(secret, value, f"{settings.source(path)} ({path})")


def _livekit_factory(module: str, stage: str) -> hookspecs.Factory:
    def factory(options: Mapping[str, Any], runtime: Any) -> Any:
        return livekit_plugins.build(module, stage, options, runtime)

    return factory


def _livekit_endpoints(module: str, stage: str) -> Callable[[Mapping[str, Any]], list[str]]:
    def endpoints(options: Mapping[str, Any]) -> list[str]:
        return livekit_plugins.endpoints(module, stage, options)

    return endpoints


START = "`start` to reach the LiveKit server"
"""Why `start` (and `dev`) need the LiveKit credentials, in the problem that names one missing."""


def check(
    settings: Settings, registry: Registry, *, providers: bool = True, livekit_for: str | None = None
) -> None:
    """Validate core keys and, with `providers`, the provider selection and its secrets; with
    `livekit_for`, the LiveKit credentials. Every problem at once (ConfigError)."""
    problems = validate(settings)
    if providers:
        # a provider's own checks read typed values: skip them where the stage's keys are broken
        broken = {p.key.split(".")[0] for p in problems}
        problems += registry.validate(settings, skip_checks=broken)
    if livekit_for:
        problems += missing_livekit(settings, f"required by {livekit_for}")
    if problems:
        raise ConfigError(problems, secrets=settings.secret_values())
    if providers:
        adopt_table_keys(settings, registry)


def env_name(env: str | None) -> str:
    """The environment a command will load (before its settings are: the plugins load first)."""
    return env or os.environ.get(ENV_VAR) or DEFAULT_ENV


def load_checked(
    env: str | None = None,
    *,
    for_start: bool = False,
    overrides: Overrides | None = None,
    overrides_source: str = "",
) -> tuple[Settings, Registry]:
    """`handler.plan.load` (every command's way) as settings and registry, for callers written
    before the plan; `for_start` asks for the LiveKit credentials as `start` does."""
    registry = Registry.load(env=env_name(env))
    settings = overridden(load(env, below=registry.table_defaults()), overrides, overrides_source)
    check(settings, registry, livekit_for=START if for_start else None)
    return settings, registry
