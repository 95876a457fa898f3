"""The plugin API: the one module a voice-handler plugin imports from.

A plugin is a module (or object) with hook implementations, found through the `voice_handler`
entry-point group:

    from handler.api import Register, Runtime, STTFactory, hookimpl

    @hookimpl
    def register_providers(register: Register) -> None:
        register("stt", "acme", build, options={"model": "fast"}, secrets=("ACME_API_KEY",))

    def build(options, runtime: Runtime) -> stt.STT:  # an STTFactory
        return AcmeSTT(model=options["model"], api_key=runtime.secret("ACME_API_KEY"),
                       http_session=runtime.http_session)

- the contract: `hookimpl`, the stages, `Provider` (the declaration `register` takes, its fields
  written once), `Register`, `Factory` and one factory type per stage, and `Runtime` (what a
  factory receives besides its options: the shared HTTP pool, the retry policy's connect options,
  the settings and secrets);
- what observers receive: `TurnRecord` and `SessionSummary` (from `turn_completed` and
  `session_summary`), the turn line's fields and messages, the log context's ids; and where a
  provider reports the durations of its own work (`record_timing`, `timings`, `EOT_INFERENCE`);
- helpers the built-in providers use, loaded on first use so that importing this module stays
  light (the registry imports every plugin to list and check providers, `config check` included):
  `RetryPolicy`, `StreamClosed`, `FirstPhraseTokenizer`, audio and word helpers, livekit's event
  channel (`send_event`) and the rest of livekit's private corners (`livekit_compat`), the
  OpenTelemetry setup (`telemetry`); for `records` sinks, the SQL
  store they share, the record's JSON, the records directory and the HTTP retry helpers.

Everything else under `handler` is the core's own and may change without notice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from handler.config import Settings
from handler.hookspecs import (
    POLICY_STAGES,
    PROVIDER_STAGES,
    STAGES,
    Factory,
    Provider,
    Register,
    hookimpl,
    selector,
)
from handler.observe.logcontext import current_ids
from handler.observe.logcontext import fields as log_fields
from handler.observe.timings import EOT_INFERENCE
from handler.observe.timings import record as record_timing
from handler.observe.timings import times as timings
from handler.pipeline.runtime import Runtime
from handler.pipeline.turns import (
    FAULT_KINDS,
    SUMMARY_MESSAGE,
    TURN_MESSAGE,
    SessionSummary,
    TurnRecord,
    to_line,
)

if TYPE_CHECKING:
    from livekit.agents import llm, stt, tts, vad

    from handler import livekit_compat
    from handler.audio import frames_to_mono, resample
    from handler.observe import telemetry
    from handler.pipeline.first_phrase import FirstPhraseTokenizer
    from handler.pipeline.retry import RETRYABLE_STATUS, RetryPolicy, parse_retry_after
    from handler.records.checks import DSN_VAR as RECORDS_DSN_VAR
    from handler.records.record import dumps as record_json
    from handler.records.sinks import SinkConfigError
    from handler.records.store import SqlStore
    from handler.records.writer import directory as records_directory
    from handler.resilience.stt_guard import StreamClosed
    from handler.words import FILLERS, without_fillers

    send_event = livekit_compat.send_event

if TYPE_CHECKING:
    VADFactory = Factory[vad.VAD]
    STTFactory = Factory[stt.STT]
    LLMFactory = Factory[llm.LLM]
    TTSFactory = Factory[tts.TTS]
    TurnFactory = Factory[Any]
    """A turn detector's: what livekit's `turn_detection` takes (a mode's name, or a detector)."""
    RetryFactory = Factory[RetryPolicy]
    LoggingFactory = Factory[None]
    """The logging policy's: configures the process's logging."""
else:  # the same protocol at run time (livekit's types are not imported for it)
    VADFactory = STTFactory = LLMFactory = TTSFactory = TurnFactory = RetryFactory = LoggingFactory = Factory

_LAZY = {
    "RetryPolicy": ("handler.pipeline.retry", "RetryPolicy"),
    "StreamClosed": ("handler.resilience.stt_guard", "StreamClosed"),
    "FirstPhraseTokenizer": ("handler.pipeline.first_phrase", "FirstPhraseTokenizer"),
    "resample": ("handler.audio", "resample"),
    "frames_to_mono": ("handler.audio", "frames_to_mono"),
    "FILLERS": ("handler.words", "FILLERS"),
    "without_fillers": ("handler.words", "without_fillers"),
    "send_event": ("handler.livekit_compat", "send_event"),
    "livekit_compat": ("handler.livekit_compat", None),
    "telemetry": ("handler.observe.telemetry", None),
    "RETRYABLE_STATUS": ("handler.pipeline.retry", "RETRYABLE_STATUS"),
    "parse_retry_after": ("handler.pipeline.retry", "parse_retry_after"),
    "SinkConfigError": ("handler.records.sinks", "SinkConfigError"),
    "SqlStore": ("handler.records.store", "SqlStore"),
    "record_json": ("handler.records.record", "dumps"),
    "records_directory": ("handler.records.writer", "directory"),
    "RECORDS_DSN_VAR": ("handler.records.checks", "DSN_VAR"),
}
"""Names whose modules import livekit, numpy or OpenTelemetry: imported when first asked for."""


def table(text: str) -> dict[str, Any]:
    """A provider's options declared as a TOML table with a comment on each key (what it means,
    why this default), as `register` takes them: `register(stage, name, factory, **table(OPTIONS))`
    gives `options` (the values) and `notes` (each key's comment, continuation lines joined; a
    comment before the first key notes the table itself, under "")."""
    import re
    import tomllib

    notes: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        started = re.match(r"([A-Za-z0-9_-]+)\s*=", line)
        comment = line.partition(" #")[2].strip() if started else line.strip().removeprefix("#").strip()
        if started:
            key = started.group(1)
        elif not line.strip().startswith("#"):
            continue  # a value's continuation (an array's items)
        if comment:
            notes[key] = f"{notes[key]} {comment}" if key in notes else comment
    return {"options": tomllib.loads(text), "notes": notes}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _LAZY[name]
    found = importlib.import_module(module)
    value = found if attribute is None else getattr(found, attribute)
    globals()[name] = value
    return value


__all__ = [
    "RECORDS_DSN_VAR",
    "RETRYABLE_STATUS",
    "SinkConfigError",
    "SqlStore",
    "parse_retry_after",
    "record_json",
    "records_directory",
    "EOT_INFERENCE",
    "FAULT_KINDS",
    "FILLERS",
    "POLICY_STAGES",
    "PROVIDER_STAGES",
    "STAGES",
    "SUMMARY_MESSAGE",
    "TURN_MESSAGE",
    "Factory",
    "FirstPhraseTokenizer",
    "LLMFactory",
    "LoggingFactory",
    "Provider",
    "Register",
    "RetryFactory",
    "RetryPolicy",
    "Runtime",
    "STTFactory",
    "SessionSummary",
    "Settings",
    "StreamClosed",
    "TTSFactory",
    "TurnFactory",
    "TurnRecord",
    "VADFactory",
    "current_ids",
    "frames_to_mono",
    "hookimpl",
    "log_fields",
    "record_timing",
    "resample",
    "selector",
    "table",
    "send_event",
    "livekit_compat",
    "telemetry",
    "timings",
    "to_line",
    "without_fillers",
]
