"""The contract between the core and its plugins.

Every pipeline stage is provided by a plugin and chosen by name in config: providers (VAD, STT,
LLM, TTS, turn detection) and policies (logging, retry) alike are declared through
`register_providers`, so the registry can list and validate every name before anything is
built. Observers (metrics, ...) use the broadcast session hooks and the turn tracker's
`turn_completed` / `session_summary`.
Built-ins implement hooks with `trylast=True` so an installed plugin that registers the same
stage and name overrides them. Plugins import from `handler.api` only (it re-exports what they
need from here and from the core).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pluggy

if TYPE_CHECKING:
    from livekit.agents import AgentSession

    from handler.config import Settings
    from handler.pipeline.runtime import Runtime
    from handler.pipeline.turns import SessionSummary, TurnRecord

PROJECT = "voice_handler"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

PROVIDER_STAGES = ("vad", "stt", "llm", "tts", "turn")
POLICY_STAGES = ("logging", "retry")
SINK_STAGES = ("records",)
"""Stages whose selector lists several providers at once, all used (not a fallback chain): the
call record's sinks (`records.sinks`)."""
STAGES = PROVIDER_STAGES + POLICY_STAGES + SINK_STAGES
SELECTORS = {"turn": "detection", "records": "sinks"}
"""The key that names a stage's provider, where it is not `provider`: `turn.detection` predates
turn detection's providers ("vad", "stt") and keeps its name; `records.sinks` names several."""


def selector(stage: str) -> str:
    """The dotted key that selects `stage`'s provider: "stt.provider", "turn.detection"."""
    return f"{stage}.{SELECTORS.get(stage, 'provider')}"


Built = TypeVar("Built", covariant=True)


class Factory(Protocol[Built]):
    """`factory(options, runtime)` returns the stage object: the livekit `vad.VAD`, `stt.STT`,
    `llm.LLM` or `tts.TTS`; for "records" a sink (`handler.records.sinks.Sink`); for "turn" what
    livekit's `turn_detection` takes (a mode name such as "vad", or a turn-detector object); a
    `RetryPolicy` for "retry"; for "logging" it configures the process's logging and returns None.
    `options` holds the stage's shared keys (`[<stage>]`) merged with the provider's own table
    (`[<stage>.<name>]`). `handler.api` names one per stage (`STTFactory`, ...)."""

    def __call__(self, options: Mapping[str, Any], runtime: Runtime, /) -> Built: ...


@dataclass(frozen=True)
class Provider:
    """A provider's declaration, written here once: a plugin passes its fields to `register`
    (`register(stage, name, factory, options=..., secrets=...)`); the registry fills `origin` (and
    `livekit_module` for the livekit plugins it discovers)."""

    stage: str
    name: str
    factory: Factory[Any]
    options: Mapping[str, Any] | None = None
    """Defaults of the provider's own options: the lowest layer of its table (`[<stage>.<name>]`),
    so every settings file, .env and variable may change them, and a key here wins over the
    stage's shared one of that name. Their types are enforced. `config show` lists them, labelled
    with the plugin. None: no options of its own."""
    notes: Mapping[str, str] = field(default_factory=dict, compare=False)
    """A one-line note per option (what it means, why this default), for the settings reference;
    `handler.api.table` reads them from the comments of a TOML table."""
    secrets: tuple[str, ...] = ()
    """Environment variables the provider cannot work without (checked only when selected)."""
    endpoints: Callable[[Mapping[str, Any]], list[str]] | None = None
    """URLs whose hosts are pre-warmed (DNS, TCP, TLS) when `http.prewarm` is on."""
    validate: Callable[[Mapping[str, Any]], list[str]] | None = None
    """Extra checks on the merged options; returns problems as `key: message` strings."""
    unavailable: Callable[[], str | None] | None = None
    """Why the provider cannot run in this installation (an optional extra not installed, say
    what to install), or None; checked only when selected, reported at the selecting key."""
    origin: str = field(default="", compare=False)
    """Filled by the registry: "built-in" or the distribution that provides it."""
    livekit_module: str | None = None
    """Set for a livekit plugin found installed with no voice-handler code (`livekit.plugins.<it>`):
    its options are checked against its constructor's signature (`handler.livekit_plugins`)."""
    preload: tuple[str, ...] = ()
    """Modules the factory imports (an SDK, a livekit plugin). The worker imports them once in its
    forkserver, so a job process inherits them instead of importing them in the call."""

    def __post_init__(self) -> None:
        # a plugin's own mapping and sequences, copied: the registry keeps what was declared
        if self.options is not None:
            object.__setattr__(self, "options", dict(self.options))
        object.__setattr__(self, "notes", dict(self.notes))
        object.__setattr__(self, "secrets", tuple(self.secrets))
        object.__setattr__(self, "preload", tuple(self.preload))


class Register(Protocol):
    def __call__(self, stage: str, name: str, factory: Factory[Any], **declaration: Any) -> None:
        """Declare a provider: `declaration` holds any of `Provider`'s other fields (`options`,
        `secrets`, `endpoints`, `validate`, `unavailable`, `preload`); an unknown one fails the
        plugin's loading, naming it."""


class Specs:
    @hookspec
    def register_providers(self, register: Register) -> None:
        """Declare the providers this plugin offers: `register(stage, name, factory, ...)`."""

    @hookspec
    def session_started(self, session: AgentSession, settings: Settings, info: Mapping[str, Any]) -> None:
        """An `AgentSession` has started; `info` carries ids (job, room, or simulation)."""

    @hookspec
    def turn_completed(self, record: TurnRecord, info: Mapping[str, Any]) -> None:
        """The turn tracker (`handler.pipeline.turns`) finished a turn: the user spoke and the agent's
        reply is in the chat history. `record` is the one typed record every report reads."""

    @hookspec
    def session_summary(self, summary: SessionSummary, info: Mapping[str, Any]) -> None:
        """The turn tracker's summary of a session that is closing (after its last turn)."""

    @hookspec
    def session_ended(self, session: AgentSession, settings: Settings, info: Mapping[str, Any]) -> None:
        """An `AgentSession` is closing (after `session_summary`); observers release it here."""
