"""Observer `metrics`: one log line per turn and one summary per session, for `start` and `simulate`.

Per turn (logger `handler.metrics`, message `turn`): time to first audio (livekit's e2e latency:
end of user speech -> agent audio) and its parts, whether the reply was interrupted or paused by
a false interruption, and the retries and errors seen since the previous turn. At session end,
message `session summary`: turns, p50/p95 time to first audio, false interruptions per minute,
retries, errors, LLM tokens and TTS characters. Per-turn numbers come from livekit 1.8's
`ChatMessage.metrics` (the session-wide `metrics_collected` event is deprecated).

These lines are the product's output, so `handler.metrics` logs at INFO even when the root level
is WARNING (production): a production session logs its turns, its summary and what went wrong.

The same numbers feed Prometheus histograms and counters (`voice_handler_*`), which the worker
serves on `worker.prometheus_port` (see handler/worker.py for the multi-process collection).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Histogram

from handler.hookspecs import hookimpl
from handler.logcontext import fields

logger = logging.getLogger("handler.metrics")
logger.setLevel(logging.INFO)

# the parts of time to first audio: turn-line field `<stage>_ms`, Prometheus label `stage`,
# and the key in livekit's ChatMessage.metrics
STAGES = {
    "eou": "end_of_turn_delay",
    "transcription": "transcription_delay",
    "llm_ttft": "llm_node_ttft",
    "tts_ttfb": "tts_node_ttfb",
}


# In multi-process mode (the worker with a Prometheus port) prometheus_client opens a file in
# this directory as each series below is created; livekit creates it only when the worker
# starts, after plugins are loaded, and an operator's directory may not exist yet.
if _multiproc_dir := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(_multiproc_dir, exist_ok=True)

# voice latencies: the guide's targets sit between 0.5 and 1.5 s; 3-5 s is the "before"
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
TTFA = Histogram(
    "voice_handler_time_to_first_audio_seconds",
    "End of user speech to first agent audio, per turn",
    buckets=_BUCKETS,
)
STAGE = Histogram(
    "voice_handler_stage_seconds",
    "Per-turn time of a pipeline stage (the parts of time to first audio)",
    ["stage"],
    buckets=_BUCKETS,
)
for _stage in STAGES:
    STAGE.labels(_stage)  # every series exists, at zero, before the first turn
TURNS = Counter("voice_handler_turns", "Turns answered")
INTERRUPTIONS = Counter("voice_handler_interruptions", "Replies cut short by the user")
FALSE_INTERRUPTIONS = Counter(
    "voice_handler_false_interruptions", "Replies paused by user sound, then resumed"
)
RETRIES = Counter("voice_handler_retries", "Failed provider attempts that were retried")
ERRORS = Counter("voice_handler_errors", "Provider failures that were not recovered")
FAULTS = Counter(
    "voice_handler_faults",
    "Provider faults per stage and kind (retries, timeouts, fallbacks, errors, lost utterances)",
    ["stage", "kind"],
)


def _ms(value: Any) -> int | None:
    return None if value is None else round(value * 1000)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


@dataclass
class SessionMetrics:
    """Turn lines as the session's events arrive; the summary when it ends."""

    started: float = field(default_factory=time.monotonic)
    turns: int = 0
    ttfa: list[float] = field(default_factory=list)
    false_interruptions: int = 0
    retries: int = 0
    errors: int = 0
    _user: Mapping[str, Any] | None = None
    _pending_false: int = 0
    _pending_retries: int = 0
    _pending_errors: int = 0
    faults: Any = None
    """The session's `handler.resilience.ledger.FaultLedger`: it sees what the session's error
    events miss (chain members behind a FallbackAdapter, our watchdogs, lost utterances)."""

    def on_item(self, ev: Any) -> None:
        msg = ev.item
        if getattr(msg, "type", None) != "message":
            return  # agent handoffs and other items carry no turn
        if msg.role == "user":
            self._user = dict(msg.metrics or {})
        elif msg.role == "assistant" and self._user is not None:
            self._turn(self._user, dict(msg.metrics or {}), msg.interrupted)
            self._user = None

    def on_false_interruption(self, ev: Any) -> None:
        if ev.resumed:
            self._pending_false += 1
            self.false_interruptions += 1
            FALSE_INTERRUPTIONS.inc()

    def on_error(self, ev: Any) -> None:
        # livekit reports each failed attempt; recoverable ones are retried
        if getattr(ev.error, "recoverable", False):
            self._pending_retries += 1
            self.retries += 1
            RETRIES.inc()
        else:
            self._pending_errors += 1
            self.errors += 1
            ERRORS.inc()

    def _turn(self, user: Mapping[str, Any], reply: Mapping[str, Any], interrupted: bool) -> None:
        self.turns += 1
        ttfa = reply.get("e2e_latency")
        if ttfa is not None:
            self.ttfa.append(ttfa)
        parts = {**user, **reply}
        values: dict[str, Any] = {"n": self.turns, "ttfa_ms": _ms(ttfa)}
        values |= {f"{stage}_ms": _ms(parts.get(key)) for stage, key in STAGES.items()}
        values |= {
            "interrupted": interrupted,
            "false_interruptions": self._pending_false,
            "retries": self._pending_retries,
            "errors": self._pending_errors,
        }
        self._pending_false = self._pending_retries = self._pending_errors = 0
        if self.faults is not None:
            values |= _fault_fields(self.faults.since_last_turn())
        logger.info("turn", extra=fields(**values))
        TURNS.inc()
        INTERRUPTIONS.inc(interrupted)
        if ttfa is not None:
            TTFA.observe(ttfa)
        for stage, key in STAGES.items():
            if (seconds := parts.get(key)) is not None:
                STAGE.labels(stage).observe(seconds)

    def summary(self, usage: Any = None) -> dict[str, Any]:
        minutes = (time.monotonic() - self.started) / 60
        tokens = characters = 0
        for u in getattr(usage, "model_usage", None) or []:
            kind = getattr(u, "type", "")
            if kind == "llm_usage":
                tokens += u.input_tokens + u.output_tokens
            elif kind == "tts_usage":
                characters += u.characters_count
        out = {
            "turns": self.turns,
            "ttfa_p50_ms": _ms(_percentile(self.ttfa, 50)),
            "ttfa_p95_ms": _ms(_percentile(self.ttfa, 95)),
            "false_interruptions": self.false_interruptions,
            "false_interruptions_per_min": round(self.false_interruptions / minutes, 2) if minutes else 0.0,
            "retries": self.retries,
            "errors": self.errors,
            "llm_tokens": tokens,
            "tts_characters": characters,
            "minutes": round(minutes, 2),
        }
        if self.faults is not None:
            _fault_fields(self.faults.since_last_turn())  # Prometheus: faults after the last turn
            out |= {k: v for k, v in _fault_fields(self.faults.totals(), count=False).items()}
            if self.faults.ended:
                out["ended"] = self.faults.ended
        return out


def _fault_fields(faults: Any, *, count: bool = True) -> dict[str, Any]:
    """Turn-line fields from the ledger's per-stage counts: retries and errors over every stage,
    and `faults`, e.g. `llm.retries=2,llm.errors=1,llm.fallbacks=1` (empty when none)."""
    from handler.resilience.ledger import format_faults

    for stage, counts in faults.items() if count else ():
        for kind, n in vars(counts).items():
            if n:
                FAULTS.labels(stage, kind).inc(n)
    return {
        "retries": sum(c.retries for c in faults.values()),
        "errors": sum(c.errors for c in faults.values()),
        "faults": format_faults(faults),
    }


_sessions: dict[int, SessionMetrics] = {}


@hookimpl(trylast=True)
def session_started(session: Any, settings: Any, info: Mapping[str, Any]) -> None:
    from handler.resilience.ledger import ledger_of

    metrics = SessionMetrics(faults=ledger_of(session))
    _sessions[id(session)] = metrics
    session.on("conversation_item_added", metrics.on_item)
    session.on("agent_false_interruption", metrics.on_false_interruption)
    session.on("error", metrics.on_error)


@hookimpl(trylast=True)
def session_ended(session: Any, settings: Any, info: Mapping[str, Any]) -> None:
    metrics = _sessions.pop(id(session), None)
    if metrics is not None:
        logger.info("session summary", extra=fields(**metrics.summary(getattr(session, "usage", None))))
