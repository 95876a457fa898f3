"""Accumulating what the lines say into one bounded `Report`: counters, per-minute volume, exact
latency counts at 1 ms (percentiles by `handler.pipeline.turns.percentile`), fixed-size plot samples;
`analyze()` streams any number of inputs through it."""

from __future__ import annotations

import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from handler.logs.parse import (
    _ANSI,
    _OPENAI_MS,
    _RETRY,
    ERROR_LEVELS,
    FALSE_INTERRUPTION,
    SEGMENT_SYNC,
    TRACEBACK,
    LogInputError,
    iso,
    minute_iso,
    parse_line,
    read_lines,
)
from handler.pipeline import turns

RESERVOIR = 4096  # plot points kept; exact below this many, a uniform sample above

ADVICE = {
    "false_interruptions": "raise MIN_ENDPOINTING_DELAY to 0.6-0.8 (and/or INTERRUPTION_THRESHOLD to 0.9)",
    "slow_llm": "lower MAX_TOKENS (e.g. 300), keep instructions concise, check the provider",
    "segment_sync": "session lifecycle: make sure sessions are closed once; "
    "usually harmless after an interruption",
    "volume": "set LOG_LEVEL=WARNING (production)",
    "errors": "check HTTP_TIMEOUT / MAX_RETRIES and the provider's status page",
    "faults": "the stage's provider failed: see its status page; timeouts: check HTTP_TIMEOUT; "
    "errors or lost utterances with no fallback: set <stage>.fallback",
}
SESSION_KEYS = ("job", "session", "job_id")
"""The id fields that tell one session's lines from another's (worker: job; simulate: session)."""


class LatencyCounts:
    """Latencies in milliseconds, counted per whole millisecond: exact percentiles (turn lines
    carry whole milliseconds) in bounded memory (at most `turns.MAX_MS` distinct keys)."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0

    def add(self, v: float) -> None:
        key = round(v)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.n += 1

    def percentile(self, p: float) -> float | None:
        return turns.percentile(self.counts, p)

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.n,
            "p50_ms": self.percentile(50),
            "p95_ms": self.percentile(95),
            "max_ms": self.percentile(100),
        }


class _Reservoir:
    """Uniform fixed-size sample (algorithm R, seeded so output is reproducible)."""

    def __init__(self, size: int = RESERVOIR) -> None:
        self.size, self.seen = size, 0
        self.items: list[Any] = []
        self._rng = random.Random(0)

    def add(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.size:
                self.items[j] = item


@dataclass
class Report:
    """Everything `analyze` found; `to_dict()` is the --json shape, `findings()` the advice."""

    files: list[str]
    slow_llm_ms: float = 1000
    false_per_minute_target: float = 1.0
    volume_target: float = 100.0
    lines: int = 0
    timed_lines: int = 0
    malformed_lines: int = 0  # invalid JSON, binary/undecodable bytes, over-long lines
    bad_values: int = 0  # non-numeric / negative / implausible fields, bad timestamps
    first_ts: float | None = None  # epoch seconds (UTC)
    last_ts: float | None = None
    per_minute: dict[int, int] = field(default_factory=dict)  # epoch minute -> lines
    turns: int = 0
    session_summaries: int = 0
    summary_minutes: float | None = None  # the sessions' own length, summed over summary lines
    false_livekit: int = 0  # "resumed false interrupted speech" lines
    false_turn: int = 0  # turn lines with false_interruption true
    turns_with_false_field: int = 0
    slow_openai: int = 0
    slow_ttft: int = 0
    segment_sync: int = 0
    segment_sync_kinds: Counter = field(default_factory=Counter)
    error_lines: int = 0
    tracebacks: int = 0
    turn_errors: int = 0  # sum of errors=N over turn lines
    retry_lines: int = 0  # livekit "retrying" messages
    turn_retries: int = 0  # sum of retries=N over turn lines
    error_samples: list[str] = field(default_factory=list)
    stage_faults: dict[str, Counter] = field(default_factory=dict)
    """Per stage, per kind (retries, timeouts, fallbacks, errors, lost): the turn lines' counts,
    plus what a session's summary counts beyond its turn lines (faults after its last turn)."""
    _open_sessions: dict[Any, Counter] = field(default_factory=dict, repr=False)
    """(stage, kind) counts of the turn lines of sessions whose summary has not been read yet."""
    ttfa: LatencyCounts = field(default_factory=LatencyCounts)
    llm_ttft: LatencyCounts = field(default_factory=LatencyCounts)
    openai_ms: LatencyCounts = field(default_factory=LatencyCounts)
    ttfa_points: _Reservoir = field(default_factory=_Reservoir)  # (epoch s, ttfa ms)
    false_turn_times: _Reservoir = field(default_factory=_Reservoir)
    false_livekit_times: _Reservoir = field(default_factory=_Reservoir)

    # -- derived figures -------------------------------------------------------------------

    @property
    def span_minutes(self) -> float | None:
        if self.first_ts is None or self.last_ts is None:
            return None
        return (self.last_ts - self.first_ts) / 60

    @property
    def rate_minutes(self) -> float | None:
        """Denominator of the volume rate: the log's time span (`turns.per_minute` rates over at
        least one minute, so a few seconds of log cannot turn one event into "12 per minute")."""
        return self.span_minutes

    @property
    def conversation_minutes(self) -> float | None:
        """Denominator of the false-interruption rate: the sessions' own minutes when their
        summary lines say (as the worker's summary and `simulate` count them), else the log's
        time span."""
        return self.summary_minutes if self.summary_minutes is not None else self.span_minutes

    @property
    def false_source(self) -> str:
        """Turn lines are preferred: one per turn, so no double counting; livekit's DEBUG line
        is the fallback when the project's metrics lines are absent (e.g. foreign logs)."""
        return "turn lines" if self.turns_with_false_field else "livekit lines"

    @property
    def false_count(self) -> int:
        return self.false_turn if self.turns_with_false_field else self.false_livekit

    @property
    def false_per_minute(self) -> float | None:
        return turns.per_minute(self.false_count, self.conversation_minutes)

    @property
    def lines_per_minute(self) -> float | None:
        return turns.per_minute(self.lines, self.rate_minutes)

    def findings(self) -> list[dict[str, str]]:
        out = []

        def add(kind: str, finding: str) -> None:
            out.append({"kind": kind, "finding": finding, "advice": ADVICE[kind]})

        rate = self.false_per_minute
        if rate is not None and rate > self.false_per_minute_target:
            add(
                "false_interruptions",
                f"{rate:g} false interruptions/min (from {self.false_source}) "
                f"> target {self.false_per_minute_target:g}",
            )
        if self.slow_openai or self.slow_ttft:
            add(
                "slow_llm",
                f"{self.slow_openai} openai-processing-ms and {self.slow_ttft} llm_ttft_ms "
                f"values > {self.slow_llm_ms:g} ms",
            )
        if self.segment_sync:
            add("segment_sync", f"{self.segment_sync} _SegmentSynchronizerImpl warnings")
        lpm = self.lines_per_minute
        if lpm is not None and lpm > self.volume_target:
            add("volume", f"{lpm:g} lines/min > {self.volume_target:g}")
        errors = self.error_lines + self.tracebacks + self.turn_errors
        retries = self.retry_lines + self.turn_retries
        if errors or retries:
            add("errors", f"{errors} errors/tracebacks, {retries} retries")
        for stage, counts in self.faults().items():
            listed = ", ".join(f"{n} {kind}" for kind, n in counts.items())
            add("faults", f"{stage} faults: {listed}")
        return out

    def faults(self) -> dict[str, dict[str, int]]:
        """Per stage (in pipeline order) the kinds that were counted, in the ledger's order."""
        return {
            stage: {kind: c[kind] for kind in turns.FAULT_KINDS if c[kind]}
            for stage in turns.FAULT_STAGES
            if (c := self.stage_faults.get(stage)) and any(c.values())
        }

    def volume(self) -> list[dict[str, Any]]:
        return [{"minute": minute_iso(m), "lines": n} for m, n in sorted(self.per_minute.items())]

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "lines": self.lines,
            "timed_lines": self.timed_lines,
            "malformed_lines": self.malformed_lines,
            "bad_values": self.bad_values,
            "first_ts": iso(self.first_ts),
            "last_ts": iso(self.last_ts),
            "span_minutes": _round(self.span_minutes),
            "turns": self.turns,
            "session_summaries": self.session_summaries,
            "false_interruptions": {
                "livekit_lines": self.false_livekit,
                "turn_lines": self.false_turn,
                "rate_source": self.false_source,
                "count": self.false_count,
                "per_minute": self.false_per_minute,
                "minutes": _round(self.conversation_minutes),
                "target_per_minute": self.false_per_minute_target,
            },
            "slow_llm": {
                "threshold_ms": self.slow_llm_ms,
                "openai_processing_ms": {**self.openai_ms.summary(), "slow": self.slow_openai},
                "llm_ttft_ms": {**self.llm_ttft.summary(), "slow": self.slow_ttft},
            },
            "segment_sync": {
                "count": self.segment_sync,
                "kinds": dict(self.segment_sync_kinds.most_common()),
            },
            "errors": {
                "error_lines": self.error_lines,
                "tracebacks": self.tracebacks,
                "turn_errors": self.turn_errors,
                "samples": self.error_samples,
            },
            "retries": {"livekit_lines": self.retry_lines, "turn_retries": self.turn_retries},
            "faults": self.faults(),
            "volume": {
                "lines_per_minute": self.lines_per_minute,
                "peak_lines_per_minute": max(self.per_minute.values(), default=0),
                "per_minute": self.volume(),
            },
            "ttfa_ms": self.ttfa.summary(),
            "findings": self.findings(),
        }

    # -- accumulation ----------------------------------------------------------------------

    def _num(self, value: Any) -> float | None:
        """A latency field (openai-processing-ms) as a float, or None (counted as a bad value)."""
        v = turns._number(value)
        if v is None:
            self.bad_values += 1
        return v

    def _latency(self, hist: LatencyCounts, value: Any) -> bool:
        """Add a latency; True when it is above the slow-LLM threshold."""
        v = self._num(value)
        if v is None:
            return False
        hist.add(v)
        return v > self.slow_llm_ms

    def _turn(self, ts: float | None, fields: dict[str, Any]) -> None:
        """A turn line, read back into the record it was written from."""
        self.turns += 1
        record, bad = turns.from_line(fields)
        self.bad_values += bad
        if record.ttfa is not None:
            self.ttfa.add(record.ttfa * 1000)
            if ts is not None:
                self.ttfa_points.add((ts, record.ttfa * 1000))
        if record.llm_ttft is not None:
            self.llm_ttft.add(record.llm_ttft * 1000)
            if record.llm_ttft * 1000 > self.slow_llm_ms:
                self.slow_ttft += 1
        # a line that says nothing about false interruptions (or says it badly) does not count
        # towards the turn-line rate
        if _has_valid(fields, ("false_interruptions", "false_interruption")):
            self.turns_with_false_field += 1
            self.false_turn += record.false_interruptions
            if record.false_interruptions and ts is not None:
                self.false_turn_times.add(ts)
        self.turn_retries += record.retries
        self.turn_errors += record.errors
        # per stage only what the line names per stage (`llm_timeouts=1`): older lines' bare
        # totals stay in the errors finding rather than be guessed onto a stage
        staged, _ = turns.read_fault_fields(fields)  # its bad values are counted above
        seen = self._open_sessions.setdefault(_session_key(fields), Counter())
        for stage, kind, n in _counts(staged):
            self._add_fault(stage, kind, n)
            seen[(stage, kind)] += n

    def _add_fault(self, stage: str, kind: str, n: int) -> None:
        self.stage_faults.setdefault(stage, Counter())[kind] += n

    def _summary(self, fields: dict[str, Any]) -> None:
        self.session_summaries += 1
        minutes = turns._number(fields.get("minutes"))
        if minutes is not None:
            self.summary_minutes = (self.summary_minutes or 0.0) + minutes
        # the summary's per-stage totals cover the session's turn lines too: add only the rest
        # (faults after the last turn, e.g. every utterance lost by a recognizer that is down)
        totals, bad = turns.read_fault_fields(fields)
        self.bad_values += bad
        seen = self._open_sessions.pop(_session_key(fields), Counter())
        for stage, kind, n in _counts(totals):
            if (rest := n - seen[(stage, kind)]) > 0:
                self._add_fault(stage, kind, rest)

    def feed(self, raw: bytes, overlong: bool = False) -> None:
        """Account for one raw line (bytes, newline included or not)."""
        self.lines += 1
        text = raw.decode("utf-8", errors="replace")
        text = _ANSI.sub("", text).strip().strip("\x00")
        line = parse_line(text)
        ts, level, msg, fields = line.ts, line.level, line.msg, line.fields
        self.bad_values += line.bad_ts
        # one count per line, however many ways it is broken
        if overlong or line.bad_json or "\ufffd" in text or "\x00" in text:
            self.malformed_lines += 1

        if ts is not None:
            self.timed_lines += 1
            self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
            minute = int(ts // 60)
            self.per_minute[minute] = self.per_minute.get(minute, 0) + 1

        if msg == turns.TURN_MESSAGE:
            self._turn(ts, fields)
        elif msg == turns.SUMMARY_MESSAGE:
            self._summary(fields)

        # grep recipes run on the whole line so they work for every format
        if FALSE_INTERRUPTION in text:
            self.false_livekit += 1
            if ts is not None:
                self.false_livekit_times.add(ts)
        for m in _OPENAI_MS.finditer(text):
            if self._latency(self.openai_ms, m.group(1)):
                self.slow_openai += 1
        if SEGMENT_SYNC in text:
            self.segment_sync += 1
            kind = re.split(r"[{\"]", text[text.index(SEGMENT_SYNC) :], maxsplit=1)[0]
            kind = kind.strip()[:80]
            # bounded: after 50 distinct kinds everything else is "other"
            if kind in self.segment_sync_kinds or len(self.segment_sync_kinds) < 50:
                self.segment_sync_kinds[kind] += 1
            else:
                self.segment_sync_kinds["other"] += 1
        if TRACEBACK in text:
            self.tracebacks += 1
        if level in ERROR_LEVELS:
            self.error_lines += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(text[:200])
        if _RETRY.search(text):
            self.retry_lines += 1


def _session_key(fields: dict[str, Any]) -> Any:
    return next((str(fields[k]) for k in SESSION_KEYS if k in fields), None)


def _counts(faults: dict[str, turns.StageFaults]) -> list[tuple[str, str, int]]:
    return [
        (stage, kind, n)
        for stage, counts in faults.items()
        for kind in turns.FAULT_KINDS
        if (n := getattr(counts, kind))
    ]


def _has_valid(fields: dict[str, Any], keys: tuple[str, ...]) -> bool:
    """The first of `keys` present in the line holds a usable value."""
    for key in keys:
        if key in fields:
            _, bad = turns.from_line({key: fields[key]})
            return not bad
    return False


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def analyze(
    paths: list[str],
    *,
    slow_llm_ms: float = 1000,
    false_per_minute_target: float = 1.0,
    volume_target: float = 100.0,
    stdin: IO[bytes] | None = None,
) -> Report:
    """Analyze log files ("-" = stdin, read as bytes) in one streaming pass.

    Raises LogInputError before reading anything if a path is missing or unreadable.
    """
    report = Report(
        files=list(paths),
        slow_llm_ms=slow_llm_ms,
        false_per_minute_target=false_per_minute_target,
        volume_target=volume_target,
    )
    handles: list[IO[bytes]] = []
    try:
        # open everything first so a typo in the last path fails fast, not after a 2 GB file
        for path in paths:
            if path == "-":
                handles.append(stdin if stdin is not None else sys.stdin.buffer)
                continue
            try:
                handles.append(open(path, "rb"))  # noqa: SIM115 - closed in finally
            except FileNotFoundError:
                raise LogInputError(f"log file not found: {path}") from None
            except OSError as e:
                raise LogInputError(f"cannot read log file {path}: {e.strerror or e}") from None
        for fh in handles:
            for raw, overlong in read_lines(fh):
                report.feed(raw, overlong)
    finally:
        for fh, path in zip(handles, paths, strict=False):
            if path != "-":
                fh.close()
    return report
