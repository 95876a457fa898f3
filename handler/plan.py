"""Configuration + registry, resolved once into the plan a session is built from.

Per stage the plan holds its provider chain (each provider with the options its factory receives,
computed once) and the policies every part of a session follows (the retry policy and its timeout,
pre-warming, resilience). Session building, fallback, the resilience layer, the worker's prewarm and
preload read the plan: none of them goes back to the registry or re-reads a stage's settings.

Every command loads through `load`: one way to read the layers and check them, with explicit
parameters for what differs between commands (overrides, the LiveKit credentials a command needs,
whether it needs the environment's providers, stand-in keys for the provider fakes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from handler import config
from handler.hookspecs import POLICY_STAGES, SINK_STAGES, STAGES, Provider

if TYPE_CHECKING:
    from handler.pipeline.retry import RetryPolicy
    from handler.pipeline.runtime import Runtime
    from handler.registry import Registry


@dataclass(frozen=True)
class Link:
    """One provider of a stage's chain and the options its factory receives (provider defaults <
    the stage's shared keys < the provider's own table), validated and computed once."""

    provider: Provider
    options: Mapping[str, Any]

    @property
    def stage(self) -> str:
        return self.provider.stage

    @property
    def name(self) -> str:
        return self.provider.name

    def build(self, runtime: Runtime) -> Any:
        return self.provider.factory(self.options, runtime)


@dataclass(frozen=True)
class StagePlan:
    """A stage's chain in order: its provider first, then its `fallback` backups (one link: no
    fallback)."""

    stage: str
    chain: tuple[Link, ...]

    @property
    def primary(self) -> Link:
        return self.chain[0]

    @property
    def chained(self) -> bool:
        return len(self.chain) >= 2


@dataclass(frozen=True)
class Resilience:
    """`[resilience]`: how a failing provider is probed again, how a burst is ridden out and when a
    stage is down for good (`handler.resilience.decider`)."""

    probe_initial: float
    probe_max: float
    down_for: float
    apology: str
    apology_timeout: float
    hold_line: str
    hold_after: float

    @classmethod
    def of(cls, settings: config.Settings) -> Resilience:
        r = settings.section("resilience")
        return cls(
            probe_initial=r["probe_initial"],
            probe_max=r["probe_max"],
            down_for=r["down_for"],
            apology=r["apology"],
            apology_timeout=r["apology_timeout"],
            hold_line=r["hold_line"],
            hold_after=r["hold_after"],
        )


class Plan:
    """The resolved configuration of one environment. Built by `load` (or `resolve` from settings
    and a registry already at hand); its stages and policies resolve on first use, once."""

    def __init__(self, settings: config.Settings, registry: Registry | None = None) -> None:
        self.settings = settings
        self._registry = registry
        self._stages: dict[str, StagePlan] = {}

    @cached_property
    def registry(self) -> Registry:
        """The plugins (loaded here for a plan that was loaded without one: `config show` needs none)."""
        if self._registry is None:
            from handler.registry import Registry

            self._registry = Registry.load(env=self.settings.env)
        return self._registry

    # ------------------------------------------------------------------ stages

    def stage(self, stage: str) -> StagePlan:
        """The stage's chain, resolved on first use (a command that only logs resolves no other)."""
        if stage not in self._stages:
            names = self.registry.selected(self.settings, stage)
            self._stages[stage] = StagePlan(stage, tuple(self.link(stage, name) for name in names))
        return self._stages[stage]

    @property
    def stages(self) -> dict[str, StagePlan]:
        return {stage: self.stage(stage) for stage in STAGES}

    def link(self, stage: str, name: str) -> Link:
        return Link(self.registry.get(stage, name), self.registry.options(self.settings, stage, name))

    def options(self, stage: str, name: str | None = None) -> Mapping[str, Any]:
        """The options of the stage's provider (or of `name` in its chain)."""
        chain = self.stage(stage).chain
        return next(link for link in chain if name in (None, link.name)).options

    # ------------------------------------------------------------------ policies

    @cached_property
    def retry(self) -> RetryPolicy:
        """The retry policy (its attempts and each attempt's timeout), built once."""
        return self.stage("retry").primary.build(self._settings_only)

    @cached_property
    def _settings_only(self) -> Runtime:
        """What the policies (retry, logging) and the records sinks receive: the settings (and
        secrets) only. The policies are built before any runtime (the retry policy is where every
        runtime's connect options come from), and neither they nor a sink talk to a livekit API,
        so none of them imports livekit for connect options they would not use."""
        from handler.pipeline.runtime import Runtime

        return Runtime(self.settings, None, None)

    def runtime_for(self, stage: str) -> Runtime:
        """The runtime a stage's factory receives outside the job's event loop."""
        return self._settings_only if stage in POLICY_STAGES + SINK_STAGES else self.runtime()

    @cached_property
    def conn_options(self) -> Any:
        """livekit's `APIConnectOptions` from the retry policy."""
        return self.retry.conn_options()

    @cached_property
    def resilience(self) -> Resilience:
        return Resilience.of(self.settings)

    @property
    def prewarm(self) -> bool:
        """`http.prewarm`: open the providers' connections before they are needed."""
        return bool(self.settings.get("http.prewarm"))

    # ------------------------------------------------------------------ building

    def runtime(self, http_session: Any = None, *, pooled: bool = False) -> Runtime:
        """What a factory receives besides its options. `pooled` (inside the job's event loop):
        the process's shared HTTP pool, or `http_session` when given; otherwise none (the VAD and
        the turn detector, built in the worker's synchronous prewarm, need none)."""
        from handler.pipeline.runtime import Runtime

        if pooled and http_session is None:
            from handler.pipeline.http import shared_session

            http_session = shared_session(self.settings)
        return Runtime(settings=self.settings, http_session=http_session, conn_options=self.conn_options)

    def build(self, stage: str, runtime: Runtime | None = None) -> Any:
        """The stage's provider object."""
        return self.stage(stage).primary.build(runtime or self.runtime())

    def build_other(
        self,
        stage: str,
        name: str,
        overrides: Mapping[str, Any] | None = None,
        source: str = "",
    ) -> Any:
        """A provider outside the configured chain (the simulator's own voice and ears: the `local`
        TTS and STT), with `overrides` over its settings."""
        other = self.overridden(overrides, source) if overrides else self
        return other.link(stage, name).build(other.runtime_for(stage))

    def overridden(self, overrides: Mapping[str, Any], source: str) -> Plan:
        """This plan with a command's own values over its settings (re-resolved on use)."""
        return Plan(self.settings.with_overrides(overrides, source), self._registry)

    def configure_logging(self) -> None:
        """The logging policy, applied to this process."""
        self.stage("logging").primary.build(self._settings_only)

    # ------------------------------------------------------------------ the worker's prewarm

    def endpoints(self) -> list[str]:
        """URLs of the stages' primary providers, for connection pre-warming."""
        return self.registry.endpoints(self.settings)

    def preload_modules(self) -> list[str]:
        """Modules a job imports to build its stages (the worker's forkserver imports them once)."""
        return self.registry.preload_modules(self.settings)


def resolve(settings: config.Settings, registry: Registry) -> Plan:
    """The plan of settings already loaded and checked, with the registry they were checked by."""
    return Plan(settings, registry)


def load(
    env: str | None = None,
    *,
    check: bool = True,
    overrides: config.Overrides | None = None,
    overrides_source: str = "",
    livekit_for: str | None = None,
    providers: bool = True,
    stand_ins: Mapping[str, str] | None = None,
    stand_ins_source: str = "",
    registry: Registry | None = None,
) -> Plan:
    """The one way a command loads its configuration.

    - `check`: validate everything, every problem at once (ConfigError). Off for the commands that
      show what is there even when it would not pass (`config show`, `plugins list`, `health`).
    - `overrides` (labelled `overrides_source`): a command's own values over every layer.
    - `livekit_for`: the command needs the LiveKit credentials, and says why ("`start` to reach the
      LiveKit server").
    - `providers`: load the plugins (their providers' option defaults are the lowest layer) and
      check the environment's provider selection and the secrets its providers need (off for the
      caller side, `call` and `loadtest`, whose agent's providers are the worker's; and `health`).
    - `stand_ins`: secret values used where the environment has none, labelled `stand_ins_source`
      (the provider fakes accept any key); never written to os.environ.
    - `registry`: one already loaded (else loaded here, when needed).
    """
    if providers or check:  # the plugins' own defaults are the lowest layer
        from handler.registry import Registry, env_name

        registry = registry or Registry.load(env=env_name(env))
    below = registry.table_defaults() if registry is not None else ()
    settings = config.overridden(config.load(env, below=below), overrides, overrides_source)
    if stand_ins:
        settings = settings.with_stand_ins(stand_ins, stand_ins_source)
    if check:
        from handler.registry import check as check_all

        assert registry is not None
        check_all(settings, registry, providers=providers, livekit_for=livekit_for)
    return Plan(settings, registry)
