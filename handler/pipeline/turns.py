"""The one turn tracker: an `AgentSession`'s events -> typed per-turn records and a session summary.

Everything that reports on turns reads these records: the metrics plugin (turn log lines and
Prometheus), `simulate`'s report and `logs analyze` (which parses turn lines back into records
through the same field list, `LINE_FIELDS`). So a number has one meaning everywhere:

* `ttfa` is livekit's own `e2e_latency` (end of user speech -> the agent's first audio, as the
  framework saw it). It is the canonical time to first audio because it is the one every place
  can have: the worker in a room, the simulator and the logs. The simulator also measures the
  audio it actually played (`ttfa_played` in its report): a separate, named number.
* rates per minute go through `per_minute`, percentiles through `percentile` (nearest rank).

Per-stage fault counts (`StageFaults`: retries, timeouts, fallbacks, errors) sit on every record;
the tracker fills retries, timeouts and errors from the session's `error` events, and other
watchers (fallback adapters, stage watchdogs) add theirs through `TurnTracker.count_fault`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from handler.resilience.ledger import KINDS, StageFaults, ledger_of

FAULT_STAGES = ("vad", "stt", "llm", "tts")
FAULT_KINDS = KINDS
"""The fault ledger's kinds: one list, so a record carries whatever the ledger counts."""
MIN_RATE_MINUTES = 1.0
"""Rates are per minute over at least one minute, so a 20 s session with one event does not
report "3 per minute" (the same floor in the simulator, the worker's summary and the analyzer)."""


def _no_faults() -> dict[str, StageFaults]:
    return {stage: StageFaults() for stage in FAULT_STAGES}


@dataclass
class TurnRecord:
    """One user turn and the agent's reply. Times in seconds, None when livekit did not measure
    them (e.g. a reply that failed)."""

    n: int
    answered: bool = True
    """False when the user spoke again (or the session ended) before any reply: a reply that
    failed for good, or one dropped because the user went on talking."""
    user_text: str = ""
    reply_text: str = ""
    user_stopped_at: float | None = None
    """Wall time (epoch s) the user stopped speaking, as livekit saw it."""
    ttfa: float | None = None
    """Canonical time to first audio: livekit's e2e_latency (end of user speech -> agent audio)."""
    end_of_turn_delay: float | None = None
    transcription_delay: float | None = None
    llm_ttft: float | None = None
    llm_ttfs: float | None = None
    """LLM start -> its first sentence handed to the TTS (livekit's llm_node_ttfs)."""
    tts_ttfb: float | None = None
    interrupted: bool = False
    """The user cut the reply short (a reply the TTS cut short is not: its words are what played,
    its fault is on `faults["tts"]`)."""
    false_interruptions: int = 0
    """The reply was paused by user sound and resumed (livekit's agent_false_interruption)."""
    faults: dict[str, StageFaults] = field(default_factory=_no_faults)

    @property
    def retries(self) -> int:
        return sum(f.retries for f in self.faults.values())

    @property
    def errors(self) -> int:
        return sum(f.errors for f in self.faults.values())

    @property
    def floor(self) -> float | None:
        """What configuration and providers cost in series: the end-of-turn wait, the LLM's first
        sentence (or first token when the sentence time is missing) and the TTS's first byte."""
        parts = (self.end_of_turn_delay, self.llm_ttfs or self.llm_ttft, self.tts_ttfb)
        if any(p is None for p in parts):
            return None
        return sum(p for p in parts if p is not None)


# ------------------------------------------------------------------------------- the field list


@dataclass(frozen=True)
class LineField:
    """One key of the turn log line: which record attribute it carries, and how."""

    key: str
    attr: str
    kind: Literal["count", "ms", "flag"]


LINE_FIELDS: tuple[LineField, ...] = (
    LineField("n", "n", "count"),
    LineField("answered", "answered", "flag"),
    LineField("ttfa_ms", "ttfa", "ms"),
    LineField("eou_ms", "end_of_turn_delay", "ms"),
    LineField("transcription_ms", "transcription_delay", "ms"),
    LineField("llm_ttft_ms", "llm_ttft", "ms"),
    LineField("llm_ttfs_ms", "llm_ttfs", "ms"),
    LineField("tts_ttfb_ms", "tts_ttfb", "ms"),
    LineField("interrupted", "interrupted", "flag"),
    LineField("false_interruptions", "false_interruptions", "count"),
    LineField("retries", "retries", "count"),
    LineField("errors", "errors", "count"),
)
"""The turn line (logger `handler.metrics`, message `turn`), in order. Per-stage faults are
written as `<stage>_<kind>` only when not zero (e.g. `llm_timeouts=1`)."""
TURN_MESSAGE = "turn"
SUMMARY_MESSAGE = "session summary"
MAX_MS = 600_000
"""A latency above 10 minutes in a log line is garbage, not a measurement."""


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def to_line(record: TurnRecord) -> dict[str, Any]:
    """The turn line's fields for a record (milliseconds as integers)."""
    out: dict[str, Any] = {}
    for f in LINE_FIELDS:
        value = getattr(record, f.attr)
        out[f.key] = _ms(value) if f.kind == "ms" else value
    return {**out, **fault_fields(record.faults)}


def fault_fields(faults: Mapping[str, StageFaults]) -> dict[str, int]:
    """`<stage>_<kind>` for every count that is not zero (`llm_timeouts=1`): the turn line's and
    the summary line's per-stage faults."""
    return {
        f"{stage}_{kind}": count
        for stage, counts in faults.items()
        for kind in FAULT_KINDS
        if (count := getattr(counts, kind))
    }


def read_fault_fields(fields: Mapping[str, Any]) -> tuple[dict[str, StageFaults], int]:
    """The `<stage>_<kind>` keys of a line back into per-stage counts, and how many were unusable."""
    faults = _no_faults()
    bad = 0
    for stage in FAULT_STAGES:
        for kind in FAULT_KINDS:
            if (key := f"{stage}_{kind}") in fields:
                number = _number(fields[key])
                if number is None:
                    bad += 1
                else:
                    setattr(faults[stage], kind, int(number))
    return faults, bad


def from_line(fields: Mapping[str, Any]) -> tuple[TurnRecord, int]:
    """A turn line's fields (strings from text logs, numbers from JSON) back into a record, and
    how many values were unusable (non-numeric, negative, implausible). Missing keys stay at the
    record's defaults; the totals `retries`/`errors` land on the record's `llm` faults when the
    line carries no per-stage breakdown."""
    record = TurnRecord(n=0)
    bad = 0
    totals = {"retries": 0, "errors": 0}
    for f in LINE_FIELDS:
        if f.key not in fields:
            continue
        raw = fields[f.key]
        if f.kind == "flag":
            flag = _flag(raw)
            if flag is None:
                bad += 1
            else:
                setattr(record, f.attr, flag)
            continue
        number = _number(raw)
        if number is None:
            bad += 1
        elif f.kind == "ms":
            setattr(record, f.attr, number / 1000)
        elif f.attr in totals:
            totals[f.attr] = int(number)
        else:
            setattr(record, f.attr, int(number))
    # older lines carried a flag instead of a count
    if "false_interruptions" not in fields and "false_interruption" in fields:
        flag = _flag(fields["false_interruption"])
        if flag is None:
            bad += 1
        else:
            record.false_interruptions = int(flag)
    record.faults, bad_faults = read_fault_fields(fields)
    bad += bad_faults
    staged = {kind: sum(getattr(f, kind) for f in record.faults.values()) for kind in totals}
    for kind, total in totals.items():
        if total > staged[kind]:  # the remainder has no stage in the line
            setattr(record.faults["llm"], kind, getattr(record.faults["llm"], kind) + total - staged[kind])
    return record, bad


def _number(value: Any) -> float | None:
    if isinstance(value, bool):  # bool is an int subclass; True is not "1 ms"
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if 0 <= v <= MAX_MS else None  # also rejects NaN


def _flag(value: Any) -> bool | None:
    s = str(value).strip().lower()
    if s in {"1", "true", "yes", "1.0"}:
        return True
    if s in {"0", "false", "no", "0.0"}:
        return False
    return None


# ------------------------------------------------------------------------------- statistics


def percentile(values: Iterable[float] | Mapping[float, int], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: every reported value was measured). `values` is
    a list of values or a mapping of value -> how many times it was seen."""
    counts = values if isinstance(values, Mapping) else _count(values)
    n = sum(counts.values())
    if not n:
        return None
    rank = max(1, math.ceil(q / 100 * n))
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    raise AssertionError("unreachable: ranks never exceed n")


def _count(values: Iterable[float]) -> dict[float, int]:
    out: dict[float, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def per_minute(count: float, minutes: float | None) -> float | None:
    """`count` per minute over `minutes`, never over less than `MIN_RATE_MINUTES`."""
    if minutes is None:
        return None
    return round(count / max(minutes, MIN_RATE_MINUTES), 3)


@dataclass
class SessionSummary:
    turns: int
    """User turns, answered or not."""
    answered: int
    minutes: float
    ttfa_p50: float | None
    ttfa_p95: float | None
    interruptions: int
    false_interruptions: int
    false_interruptions_per_min: float | None
    retries: int
    errors: int
    llm_tokens: int = 0
    tts_characters: int = 0
    unanswered_faults: TurnRecord | None = None
    """Faults seen after the last answered turn (a reply that failed for good): counted in
    `retries` and `errors`, kept apart so counters fed per turn can add them."""
    faults: dict[str, StageFaults] = field(default_factory=_no_faults)
    """The session's faults per stage, the turns' and those after the last turn: a session
    whose recognizer never heard a word has no turn line, and its faults show here."""

    def to_line(self) -> dict[str, Any]:
        """The `session summary` line's fields."""
        return {
            "turns": self.turns,
            "answered": self.answered,
            "ttfa_p50_ms": _ms(self.ttfa_p50),
            "ttfa_p95_ms": _ms(self.ttfa_p95),
            "interruptions": self.interruptions,
            "false_interruptions": self.false_interruptions,
            "false_interruptions_per_min": self.false_interruptions_per_min,
            "retries": self.retries,
            "errors": self.errors,
            "llm_tokens": self.llm_tokens,
            "tts_characters": self.tts_characters,
            "minutes": round(self.minutes, 2),
            **fault_fields(self.faults),
        }


def summarize(
    records: list[TurnRecord], minutes: float, usage: Any = None, unanswered: TurnRecord | None = None
) -> SessionSummary:
    """The summary of a session's records; `usage` is livekit's `session.usage` (tokens, chars);
    `unanswered` holds faults after the last answered turn."""
    if unanswered is not None and not fault_fields(unanswered.faults):
        unanswered = None
    extra = [unanswered] if unanswered is not None else []
    ttfas = [r.ttfa for r in records if r.ttfa is not None]
    false = sum(r.false_interruptions for r in records)
    tokens = characters = 0
    for u in getattr(usage, "model_usage", None) or []:
        kind = getattr(u, "type", "")
        if kind == "llm_usage":
            tokens += u.input_tokens + u.output_tokens
        elif kind == "tts_usage":
            characters += u.characters_count
    return SessionSummary(
        turns=len(records),
        answered=sum(r.answered for r in records),
        minutes=minutes,
        ttfa_p50=percentile(ttfas, 50),
        ttfa_p95=percentile(ttfas, 95),
        interruptions=sum(r.interrupted for r in records),
        false_interruptions=false,
        false_interruptions_per_min=per_minute(false, minutes),
        retries=sum(r.retries for r in records + extra),
        errors=sum(r.errors for r in records + extra),
        llm_tokens=tokens,
        tts_characters=characters,
        unanswered_faults=unanswered,
        faults=add_faults(r.faults for r in records + extra),
    )


def add_faults(many: Iterable[Mapping[str, StageFaults]]) -> dict[str, StageFaults]:
    """Per-stage counts summed."""
    total = _no_faults()
    for faults in many:
        for stage, counts in faults.items():
            for kind in FAULT_KINDS:
                setattr(total[stage], kind, getattr(total[stage], kind) + getattr(counts, kind))
    return total


# ------------------------------------------------------------------------------- the tracker

_ERROR_STAGE = {"stt_error": "stt", "llm_error": "llm", "tts_error": "tts"}


class TurnTracker:
    """Follows one session: a record per answered turn (a user message followed by the agent's
    reply), handed to `on_turn` as soon as the reply is in the chat history; a user turn that gets
    no reply is handed over, unanswered, when the user speaks again or the session ends. Faults and
    false interruptions seen since the previous turn belong to the turn in progress."""

    def __init__(self, session: Any, on_turn: Callable[[TurnRecord], None] = lambda r: None) -> None:
        self.session = session
        self.on_turn = on_turn
        self.records: list[TurnRecord] = []
        self.started = time.monotonic()
        self._user: Any = None
        self._pending = TurnRecord(n=0)
        self._faults_taken = False
        """The unanswered turn's faults were taken when the user spoke again (see _on_user_state)."""
        self._heard_at: float | None = None
        """When the user last stopped speaking with no message of theirs committed since: an
        utterance the recognizer may have lost (see _lost_turn)."""
        self.ledger = ledger_of(session)
        """The session's fault ledger (`handler.pipeline.session.build` attaches one): it also sees what the
        session's error events miss (chain members behind a fallback adapter, our watchdogs, lost
        utterances), so where there is one, the records' faults come from it."""
        session.on("conversation_item_added", self._on_item)
        session.on("agent_false_interruption", self._on_false_interruption)
        session.on("error", self._on_error)
        session.on("user_state_changed", self._on_user_state)

    def detach(self) -> None:
        self.finish()
        self.session.off("conversation_item_added", self._on_item)
        self.session.off("agent_false_interruption", self._on_false_interruption)
        self.session.off("error", self._on_error)
        self.session.off("user_state_changed", self._on_user_state)

    @property
    def minutes(self) -> float:
        return (time.monotonic() - self.started) / 60

    def summary(self) -> SessionSummary:
        self._take_ledger()
        return summarize(self.records, self.minutes, getattr(self.session, "usage", None), self._pending)

    def count_fault(self, stage: str, kind: str, n: int = 1) -> None:
        """Count a fault of `stage` (vad, stt, llm, tts) for the turn in progress; `kind` is one
        of FAULT_KINDS. For watchers of the stages (fallback adapters, watchdogs)."""
        if kind not in FAULT_KINDS or stage not in FAULT_STAGES:
            raise ValueError(f"unknown fault {stage}/{kind}")
        faults = self._pending.faults[stage]
        setattr(faults, kind, getattr(faults, kind) + n)

    # events -----------------------------------------------------------------------------

    def _on_item(self, ev: Any) -> None:
        msg = ev.item
        if getattr(msg, "type", None) != "message":
            return  # agent handoffs and other items carry no turn
        if msg.role == "user":
            if self._user is not None:  # the previous user turn never got its reply
                self._complete(self._user, None)
            self._user = msg
            self._heard_at = None
        elif msg.role == "assistant" and self._user is not None:
            # a reply resumed after a false interruption is one message; a second assistant
            # message without a new user message (e.g. a continuation) is not a new turn
            self._complete(self._user, msg)
            self._user = None

    def finish(self) -> None:
        """The session is ending: a user turn still waiting for its reply is unanswered."""
        if self._user is not None:
            self._complete(self._user, None)
            self._user = None
        else:
            self._lost_turn()

    def _lost_turn(self) -> None:
        """The user spoke, no message of theirs came, and the recognizer failed meanwhile: that
        utterance was a turn the agent never heard. It gets its own (unanswered) record carrying
        the faults that lost it, instead of handing them to the next turn the recognizer heard,
        or to none. Speech without a message and without a recognizer fault is a pause inside one
        turn (its message comes later): nothing is recorded for it."""
        if self._heard_at is None:
            return
        stopped, self._heard_at = self._heard_at, None
        self._take_ledger()
        stt = self._pending.faults["stt"]
        # lost: dropped with its stream; an error no backup took over: never recognized. A retry
        # or a fallback replays the utterance: its message is still to come.
        if not (stt.lost or (stt.errors and not stt.fallbacks)):
            return
        record = self._pending
        record.n = len(self.records) + 1
        record.answered = False
        record.user_stopped_at = stopped
        self._pending = TurnRecord(n=0)
        self.records.append(record)
        self.on_turn(record)

    def _take_ledger(self) -> None:
        """The ledger's counts since the last turn onto the turn in progress."""
        if self.ledger is None:
            return
        for stage, counts in self.ledger.since_last_turn().items():
            for kind in FAULT_KINDS:
                if n := getattr(counts, kind, 0):
                    self.count_fault(stage, kind, n)

    def _on_user_state(self, ev: Any) -> None:
        # The user speaks again while a turn waits for its reply: the faults so far are that
        # turn's. From here on they are the next one's: preemptive generation sends the next
        # reply's first LLM attempts before the user's message is committed, which is when the
        # unanswered turn is completed.
        state = getattr(ev, "new_state", None)
        if state == "speaking" and self._user is not None and not self._faults_taken:
            self._take_ledger()
            self._faults_taken = True
        elif state == "speaking" and self._user is None:
            self._lost_turn()  # the previous utterance, if the recognizer lost it
        elif state == "listening" and getattr(ev, "old_state", None) == "speaking" and self._user is None:
            self._heard_at = time.time()

    def _complete(self, user: Any, reply: Any) -> None:
        um, rm = dict(user.metrics or {}), dict((reply.metrics if reply else None) or {})
        if not self._faults_taken:
            self._take_ledger()
        self._faults_taken = False
        record = self._pending
        record.n = len(self.records) + 1
        record.answered = reply is not None
        record.user_text = user.text_content or ""
        record.reply_text = (reply.text_content or "") if reply else ""
        record.user_stopped_at = um.get("stopped_speaking_at")
        record.ttfa = rm.get("e2e_latency")
        record.end_of_turn_delay = um.get("end_of_turn_delay")
        record.transcription_delay = um.get("transcription_delay")
        record.llm_ttft = rm.get("llm_node_ttft")
        record.llm_ttfs = rm.get("llm_node_ttfs")
        record.tts_ttfb = rm.get("tts_node_ttfb")
        record.interrupted = self._interrupted(reply) if reply else False
        self._pending = TurnRecord(n=0)
        self.records.append(record)
        self.on_turn(record)

    def _interrupted(self, reply: Any) -> bool:
        """Whether the reply was interrupted (by the user, or the agent's code). livekit marks a
        reply its TTS cut short as interrupted too, so the LLM knows it was not heard whole; that
        is a TTS fault (counted as one), not an interruption. The speech handle playing the reply
        (still current while its message is added) knows which it was."""
        handle = getattr(self.session, "current_speech", None)
        if handle is None or not reply.interrupted:
            return bool(reply.interrupted)
        return bool(handle.interrupted)

    def _on_false_interruption(self, ev: Any) -> None:
        if ev.resumed:
            self._pending.false_interruptions += 1

    def _on_error(self, ev: Any) -> None:
        if self.ledger is not None:
            return  # the ledger counts these (and more)
        err = getattr(ev, "error", ev)  # livekit's LLMError / STTError / TTSError
        stage = _ERROR_STAGE.get(getattr(err, "type", ""), "llm")
        faults = self._pending.faults[stage]
        if getattr(err, "recoverable", False):
            faults.retries += 1  # one failed attempt that is being retried
        else:
            faults.errors += 1
        cause = getattr(err, "error", None)
        if cause is not None and "timeout" in type(cause).__name__.lower():
            faults.timeouts += 1
