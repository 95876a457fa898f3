"""Per-session fault counts: what went wrong at each stage, readable per turn and per session.

The ledger is fed by the `error` events of every provider instance of the session (each member
of a fallback chain too, so the failures a FallbackAdapter hides from the session are still
counted), by the adapters' availability events (a fallback taken) and by our own wrappers (a
watchdog timeout, an utterance lost with its stream). Readers take `since_last_turn()` (the turn
line, the turn tracker) or `totals()` (the session summary).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("handler.resilience")

KINDS = ("retries", "timeouts", "fallbacks", "errors", "lost")
"""retries: failed attempts that were retried; timeouts: attempts cut by a timeout or a watchdog
(also counted as a retry or an error); fallbacks: requests handed to the next provider of a chain;
errors: requests that failed for good; lost: user utterances dropped with a failed stream."""
STAGES = ("stt", "llm", "tts")


@dataclass
class StageFaults:
    """One stage's counts (KINDS): the ledger's snapshots, and what a turn record adds up."""

    retries: int = 0
    timeouts: int = 0
    fallbacks: int = 0
    errors: int = 0
    lost: int = 0

    @property
    def any(self) -> bool:
        return any(getattr(self, k) for k in KINDS)


class FaultLedger:
    """Counts per (stage, kind). Thread-safe, cheap, never raises into an event handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total: Counter[tuple[str, str]] = Counter()
        self._turn: Counter[tuple[str, str]] = Counter()
        self.ended: str | None = None
        """Why the session was ended by a decision (a stage down for good), or None."""
        self.failing: set[str] = set()
        """Stages failing now and ridden out (the decider keeps it): a reply may still come."""

    def note(self, stage: str, kind: str, n: int = 1) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            self._total[(stage, kind)] += n
            self._turn[(stage, kind)] += n

    def _snapshot(self, counts: Counter[tuple[str, str]]) -> dict[str, StageFaults]:
        return {stage: StageFaults(**{kind: counts[(stage, kind)] for kind in KINDS}) for stage in STAGES}

    def totals(self) -> dict[str, StageFaults]:
        with self._lock:
            return self._snapshot(self._total)

    def since_last_turn(self) -> dict[str, StageFaults]:
        """Counts since the previous call (the turn line reads this once per turn)."""
        with self._lock:
            out = self._snapshot(self._turn)
            self._turn.clear()
            return out

    def count(self, kind: str, stage: str | None = None) -> int:
        with self._lock:
            return sum(n for (s, k), n in self._total.items() if k == kind and stage in (None, s))

    # -- feeding from livekit events -----------------------------------------------------------
    def on_provider_error(self, stage: str, ev: Any) -> None:
        """A provider instance's `error` event (STTError / LLMError / TTSError)."""
        from handler.resilience.gate import refused

        if refused(ev):
            return  # not sent: the provider is known down, the fallback serves (counted there)
        if _timed_out(getattr(ev, "error", ev)):
            self.note(stage, "timeouts")
        self.note(stage, "retries" if getattr(ev, "recoverable", False) else "errors")

    def watch_provider(self, stage: str, instance: Any) -> None:
        instance.on("error", lambda ev: self.on_provider_error(stage, ev))

    def watch_adapter(self, stage: str, adapter: Any) -> None:
        def changed(ev: Any) -> None:
            if not getattr(ev, "available", True):
                self.note(stage, "fallbacks")

        adapter.on(f"{stage}_availability_changed", changed)


def _timed_out(error: BaseException | None) -> bool:
    """A timeout, even wrapped (the ElevenLabs plugin raises "Could not synthesize" from it)."""
    from livekit.agents import APITimeoutError

    seen = 0
    while error is not None and seen < 5:
        if isinstance(error, APITimeoutError | TimeoutError):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def format_faults(faults: dict[str, StageFaults]) -> str:
    """`stt.retries=2,stt.timeouts=1,llm.fallbacks=1`; empty when nothing went wrong."""
    return ",".join(
        f"{stage}.{kind}={n}"
        for stage, counts in faults.items()
        for kind in KINDS
        if (n := getattr(counts, kind))
    )


def ledger_of(session: Any) -> FaultLedger | None:
    """The ledger `handler.pipeline.session.build` attached to a session (None for a session built
    elsewhere)."""
    return getattr(session, "_voice_handler_faults", None)


def attach(session: Any, ledger: FaultLedger) -> None:
    session._voice_handler_faults = ledger
