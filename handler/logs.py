"""Log analyzer behind `python -m handler logs analyze`: the performance guide's grep recipes
(false interruptions, slow LLM, `_SegmentSynchronizerImpl`, volume) plus errors, retries and
TTFA percentiles, in one streaming pass over any number of files (or "-" for stdin).

Line formats, auto-detected per line (ANSI colour codes and a leading "\\r" are stripped first,
because livekit's dev formatter colours the level):

* project text:  ``<ISO ts> <LEVEL> <logger> <message> key=value ...``
  e.g. ``2026-11-23T21:00:00.123Z INFO handler.metrics turn n=3 ttfa_ms=1040 ... session=sim-1``
* JSON object per line: ts in "ts"/"timestamp"/"time"/"asctime", level in "level"/"levelname",
  message in "msg"/"message", fields at top level (this project's and livekit's production format).
* anything else: only grep-matched; a leading ``YYYY-MM-DD[T ]HH:MM:SS[.,fff][Z|+hh:mm]`` gives it a
  time (naive times are taken as UTC), and a level is recognised among its first tokens.

A "turn" line is a project line whose message is ``turn``; ``session summary`` lines are counted
but their totals are not added (the turn lines already carry the same data).

Rates are per minute of log time: count / max(last ts - first ts, 1 minute) over every
timestamped line of all inputs (None when no line has a time). A false interruption shows up both
as livekit's DEBUG line and as this project's turn line with false_interruptions=N, and the two
cannot always be paired, so both are counted separately; the rate uses the turn lines when any
turn line carries the field, otherwise the livekit lines.

Memory is bounded regardless of input size: lines are read one at a time (over-long lines are cut
at ``MAX_LINE`` bytes), counters are scalars, the volume table is one int per minute of log time,
latency percentiles come from a 10 ms-bucket histogram (`_Hist`) and plot points from fixed-size
reservoirs.
"""

from __future__ import annotations

import calendar
import json
import math
import random
import re
import struct
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

MAX_LINE = 1 << 20  # bytes; a longer "line" (binary junk without newlines) is cut and flagged
MAX_MS = 600_000  # a latency above 10 minutes is garbage, not a measurement
RESERVOIR = 4096  # plot points kept; exact below this many, a uniform sample above
LEVELS = {"DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL", "DEV"}
ERROR_LEVELS = {"ERROR", "CRITICAL", "FATAL"}

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TS = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?"
)
_KV = re.compile(r"(\w+)=(\S*)")
# openai's HTTP debug log prints headers as a dict ('openai-processing-ms': '1234'); raw HTTP
# dumps use "openai-processing-ms: 1234"; inside a JSON line the quotes are backslash-escaped.
_OPENAI_MS = re.compile(r"openai-processing-ms(?:\\?['\"])?\s*[:=]\s*(?:\\?['\"])?([^\s'\"\\,;})\]]*)", re.I)
# livekit-agents retry messages: "..., retrying in {n}s" (llm/stt/tts/worker/...) and
# "all LLMs are unavailable, retrying.." / "failed to call x, retrying..." (fallback adapters);
# "skip retrying." and "before retrying" are deliberately not matched.
_RETRY = re.compile(r"\bretrying(?: in\b|\.\.)")
FALSE_INTERRUPTION = "resumed false interrupted speech"
SEGMENT_SYNC = "_SegmentSynchronizerImpl"
TRACEBACK = "Traceback (most recent call last)"

ADVICE = {
    "false_interruptions": "raise MIN_ENDPOINTING_DELAY to 0.6-0.8 (and/or INTERRUPTION_THRESHOLD to 0.9)",
    "slow_llm": "lower MAX_TOKENS (e.g. 300), keep instructions concise, check the provider",
    "segment_sync": "session lifecycle: make sure sessions are closed once; "
    "usually harmless after an interruption",
    "volume": "set LOG_LEVEL=WARNING (production)",
    "errors": "check HTTP_TIMEOUT / MAX_RETRIES and the provider's status page",
}


class LogInputError(Exception):
    """A log input cannot be opened (missing, a directory, unreadable); the CLI exits 2."""


class _Hist:
    """Latency histogram with 10 ms buckets, each remembering its count and largest value.

    At most MAX_MS/10 buckets, so memory is bounded whatever the number of values. Percentiles
    use the nearest-rank method and report the largest value seen in the bucket holding that
    rank: exact when a bucket holds one distinct value, otherwise at most 10 ms high, never low.
    """

    def __init__(self) -> None:
        self.buckets: dict[int, list[float]] = {}  # bucket -> [count, largest value]
        self.n = 0

    def add(self, v: float) -> None:
        b = self.buckets.setdefault(int(v // 10), [0, v])
        b[0] += 1
        b[1] = max(b[1], v)
        self.n += 1

    def percentile(self, p: float) -> float | None:
        if not self.n:
            return None
        rank = max(1, math.ceil(p / 100 * self.n))
        seen = 0.0
        for key in sorted(self.buckets):
            seen += self.buckets[key][0]
            if seen >= rank:
                return self.buckets[key][1]
        raise AssertionError("unreachable: ranks never exceed n")

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
    ttfa: _Hist = field(default_factory=_Hist)
    llm_ttft: _Hist = field(default_factory=_Hist)
    openai_ms: _Hist = field(default_factory=_Hist)
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
        """Denominator of every per-minute rate: the log's time span, but at least one minute
        so a few seconds of log cannot turn one event into "12 per minute"."""
        span = self.span_minutes
        return None if span is None else max(span, 1.0)

    @property
    def false_source(self) -> str:
        """Turn lines are preferred: one per turn, so no double counting; livekit's DEBUG line
        is the fallback when the project's metrics lines are absent (e.g. foreign logs)."""
        return "turn lines" if self.turns_with_false_field else "livekit lines"

    @property
    def false_count(self) -> int:
        return self.false_turn if self.turns_with_false_field else self.false_livekit

    def _rate(self, count: int) -> float | None:
        minutes = self.rate_minutes
        return None if minutes is None else round(count / minutes, 3)

    @property
    def false_per_minute(self) -> float | None:
        return self._rate(self.false_count)

    @property
    def lines_per_minute(self) -> float | None:
        return self._rate(self.lines)

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
        return out

    def volume(self) -> list[dict[str, Any]]:
        return [{"minute": _minute_iso(m), "lines": n} for m, n in sorted(self.per_minute.items())]

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "lines": self.lines,
            "timed_lines": self.timed_lines,
            "malformed_lines": self.malformed_lines,
            "bad_values": self.bad_values,
            "first_ts": _iso(self.first_ts),
            "last_ts": _iso(self.last_ts),
            "span_minutes": _round(self.span_minutes),
            "turns": self.turns,
            "session_summaries": self.session_summaries,
            "false_interruptions": {
                "livekit_lines": self.false_livekit,
                "turn_lines": self.false_turn,
                "rate_source": self.false_source,
                "count": self.false_count,
                "per_minute": self.false_per_minute,
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
        """A latency/count field as a float, or None (counted as a bad value)."""
        if isinstance(value, bool):  # bool is an int subclass; True is not "1 ms"
            value = None
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if not 0 <= v <= MAX_MS:  # also rejects NaN
            self.bad_values += 1
            return None
        return v

    def _flag(self, value: Any) -> bool | None:
        s = str(value).strip().lower()
        if s in {"1", "true", "yes", "1.0"}:
            return True
        if s in {"0", "false", "no", "0.0"}:
            return False
        self.bad_values += 1
        return None

    def _latency(self, hist: _Hist, value: Any) -> bool:
        """Add a latency; True when it is above the slow-LLM threshold."""
        v = self._num(value)
        if v is None:
            return False
        hist.add(v)
        return v > self.slow_llm_ms

    def _turn(self, ts: float | None, fields: dict[str, Any]) -> None:
        self.turns += 1
        if "ttfa_ms" in fields and (v := self._num(fields["ttfa_ms"])) is not None:
            self.ttfa.add(v)
            if ts is not None:
                self.ttfa_points.add((ts, v))
        if "llm_ttft_ms" in fields and self._latency(self.llm_ttft, fields["llm_ttft_ms"]):
            self.slow_ttft += 1
        # our turn lines count them (false_interruptions=N); older ones carried a flag
        count: float | None = None
        if "false_interruptions" in fields:
            count = self._num(fields["false_interruptions"])
        elif "false_interruption" in fields:
            flag = self._flag(fields["false_interruption"])
            count = None if flag is None else float(flag)
        if count is not None:
            self.turns_with_false_field += 1
            self.false_turn += int(count)
            if count and ts is not None:
                self.false_turn_times.add(ts)
        for key in ("retries", "errors"):
            if key in fields and (v := self._num(fields[key])) is not None:
                if key == "retries":
                    self.turn_retries += int(v)
                else:
                    self.turn_errors += int(v)

    def feed(self, raw: bytes, overlong: bool = False) -> None:
        """Account for one raw line (bytes, newline included or not)."""
        self.lines += 1
        text = raw.decode("utf-8", errors="replace")
        text = _ANSI.sub("", text).strip().strip("\x00")
        ts, level, msg, fields, bad_json = self._parse(text)
        # one count per line, however many ways it is broken
        if overlong or bad_json or "\ufffd" in text or "\x00" in text:
            self.malformed_lines += 1

        if ts is not None:
            self.timed_lines += 1
            self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
            minute = int(ts // 60)
            self.per_minute[minute] = self.per_minute.get(minute, 0) + 1

        if msg == "turn":
            self._turn(ts, fields)
        elif msg == "session summary":
            self.session_summaries += 1

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

    def _parse(self, text: str) -> tuple[float | None, str | None, str | None, dict, bool]:
        """(epoch ts, LEVEL, project message, fields, invalid JSON) of a line; unknown parts are
        None/{}."""
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:  # truncated or invalid JSON: grep only
                return None, None, None, {}, True
            if isinstance(obj, dict):
                raw_ts = next((obj[k] for k in ("ts", "timestamp", "time", "asctime") if k in obj), None)
                ts = self._ts(raw_ts) if isinstance(raw_ts, str) else None
                if raw_ts is not None and ts is None:
                    self.bad_values += 1
                level = obj.get("level", obj.get("levelname"))
                level = level.upper() if isinstance(level, str) else None
                msg = obj.get("msg", obj.get("message"))
                return ts, level, msg.strip() if isinstance(msg, str) else None, obj, False
            return None, None, None, {}, False

        m = _TS.match(text)
        if m is None:
            # no time: a level only as the first token ("ERROR:root:boom" / "ERROR boom")
            first = text.split(None, 1)[0].split(":")[0] if text else ""
            return None, first if first in LEVELS else None, None, {}, False
        ts = _epoch(m)
        if ts is None:
            self.bad_values += 1
        rest = text[m.end() :]
        tokens = rest.split(None, 3)
        # project text format: "<ts> <LEVEL> <logger> <message> key=value..."
        if len(tokens) >= 3 and tokens[0] in LEVELS:
            body = tokens[2] + (" " + tokens[3] if len(tokens) > 3 else "")
            kv = _KV.search(body)
            msg = (body[: kv.start()] if kv else body).strip()
            return ts, tokens[0], msg, dict(_KV.findall(body)), False
        # foreign formats ("<ts> - LEVEL name - msg", "<ts> - name - LEVEL - msg")
        head = [t.strip("[]:-|,") for t in rest.split(None, 4)[:4]]
        level = next((t for t in head if t in LEVELS), None)
        return ts, level, None, {}, False

    def _ts(self, s: str) -> float | None:
        m = _TS.match(s)
        return _epoch(m) if m else None


def _epoch(m: re.Match[str]) -> float | None:
    """Epoch seconds of a _TS match; naive times are taken as UTC. None if impossible."""
    y, mo, d, h, mi, s, frac, tz = m.groups()
    try:
        if not (1 <= int(mo) <= 12 and 1 <= int(d) <= calendar.monthrange(int(y), int(mo))[1]):
            return None
    except ValueError:  # year 0 etc.
        return None
    if int(h) > 23 or int(mi) > 59 or int(s) > 60:
        return None
    t: float = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s)))
    t += float("0." + frac) if frac else 0.0
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        t -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return t


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    ms = int(round(t * 1000))
    base = _fmt_time(ms // 1000, "%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ms % 1000:03d}Z"


def _minute_iso(minute: int) -> str:
    return _fmt_time(minute * 60, "%Y-%m-%dT%H:%MZ")


def _fmt_time(epoch: int, fmt: str) -> str:
    return time.strftime(fmt, time.gmtime(epoch))


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _lines(fh: IO[bytes]):
    """Yield (line, overlong) with each read capped at MAX_LINE bytes; the rest of an over-long
    line is skipped so a newline-free binary blob cannot exhaust memory."""
    while chunk := fh.readline(MAX_LINE):
        if len(chunk) == MAX_LINE and not chunk.endswith(b"\n"):
            while (rest := fh.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            yield chunk, True
        else:
            yield chunk, False


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
            for raw, overlong in _lines(fh):
                report.feed(raw, overlong)
    finally:
        for fh, path in zip(handles, paths, strict=False):
            if path != "-":
                fh.close()
    return report


def _fmt(x: float | None, unit: str = "") -> str:
    return "n/a" if x is None else f"{x:g}{unit}"


def render_text(report: Report) -> str:
    """Human-readable report for the terminal."""
    r = report
    d = r.to_dict()
    fi, llm = d["false_interruptions"], d["slow_llm"]
    out = [
        f"files: {', '.join(r.files)}",
        f"lines: {r.lines} ({r.timed_lines} timed, {r.malformed_lines} malformed lines, "
        f"{r.bad_values} bad values)",
        f"time span: {d['first_ts'] or 'n/a'} .. {d['last_ts'] or 'n/a'} ({_fmt(d['span_minutes'], ' min')})",
        f"turns: {r.turns}, session summaries: {r.session_summaries}",
        "",
        f"false interruptions: {fi['count']} from {fi['rate_source']} "
        f"(livekit lines {fi['livekit_lines']}, turn lines {fi['turn_lines']}), "
        f"{_fmt(fi['per_minute'], '/min')} (target {_fmt(fi['target_per_minute'], '/min')})",
    ]
    for name, key in (
        ("openai-processing-ms", "openai_processing_ms"),
        ("llm_ttft_ms", "llm_ttft_ms"),
    ):
        s = llm[key]
        out.append(
            f"{name}: {s['count']} values, {s['slow']} > {_fmt(llm['threshold_ms'], ' ms')}, "
            f"p50 {_fmt(s['p50_ms'])} p95 {_fmt(s['p95_ms'])} max {_fmt(s['max_ms'])}"
        )
    t = d["ttfa_ms"]
    out += [
        f"time to first audio: {t['count']} turns, p50 {_fmt(t['p50_ms'], ' ms')} "
        f"p95 {_fmt(t['p95_ms'], ' ms')} max {_fmt(t['max_ms'], ' ms')}",
        f"_SegmentSynchronizerImpl: {r.segment_sync}",
    ]
    out += [f"  {n:6d}  {kind}" for kind, n in r.segment_sync_kinds.most_common(5)]
    out += [
        f"errors: {r.error_lines} ERROR/CRITICAL lines, {r.tracebacks} tracebacks, "
        f"{r.turn_errors} turn errors",
        f"retries: {r.retry_lines} livekit retry lines, {r.turn_retries} turn retries",
    ]
    out += [f"  {s}" for s in r.error_samples]
    vol = d["volume"]
    out += [
        f"log volume: {_fmt(vol['lines_per_minute'], ' lines/min')} overall, "
        f"peak {vol['peak_lines_per_minute']} in one minute",
    ]
    rows = vol["per_minute"]
    out += [f"  {row['minute']}  {row['lines']:8d}" for row in rows[:60]]
    if len(rows) > 60:
        out.append(f"  ... {len(rows) - 60} more minutes (see --json)")
    out.append("")
    findings = d["findings"]
    if not findings:
        out.append("no findings: everything within targets")
    for f in findings:
        out.append(f"! {f['finding']}\n  -> {f['advice']}")
    return "\n".join(out) + "\n"


# -- PNG plot (numpy + zlib + struct; matplotlib is deliberately not a dependency) ---------

# 3x5 bitmap font, one string of 15 bits per glyph (rows top to bottom), for tick labels/legend.
# fmt: off
_FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111",
    "3": "111001111001111", "4": "101101111001001", "5": "111100111001111",
    "6": "111100111101111", "7": "111001001010010", "8": "111101111101111",
    "9": "111101111001111", "A": "010101111101101", "E": "111100110100111",
    "F": "111100110100100", "I": "111010010010111", "L": "100100100100111",
    "M": "101111111101101", "N": "110101101101101", "S": "111100111001111",
    "T": "111010010010010", " ": "000000000000000", ".": "000000000000010",
}
# fmt: on
BLUE, LIGHT_BLUE, RED = (31, 90, 200), (150, 180, 235), (210, 30, 30)
BLACK, GREY = (0, 0, 0), (225, 225, 225)


def _text(img: np.ndarray, x: int, y: int, s: str, color: tuple, scale: int = 2) -> None:
    for ch in s.upper():
        bits = _FONT.get(ch, _FONT[" "])
        glyph = np.array([int(b) for b in bits], dtype=bool).reshape(5, 3)
        glyph = glyph.repeat(scale, 0).repeat(scale, 1)
        h, w = glyph.shape
        region = img[y : y + h, x : x + w]
        region[glyph[: region.shape[0], : region.shape[1]]] = color
        x += w + scale


def _line(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color: tuple) -> None:
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.rint(np.linspace(x0, x1, n)).astype(int)
    ys = np.rint(np.linspace(y0, y1, n)).astype(int)
    ok = (xs >= 0) & (xs < img.shape[1]) & (ys >= 0) & (ys < img.shape[0])
    img[ys[ok], xs[ok]] = color


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def png_bytes(img: np.ndarray) -> bytes:
    """Encode an HxWx3 uint8 RGB array as a PNG (8-bit truecolour, filter 0 on every row)."""
    h, w, _ = img.shape
    raw = np.hstack([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)]).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def plot(report: Report, png_path: str, width: int = 720, height: int = 360) -> None:
    """Timeline PNG: TTFA per turn (blue points joined by a line, y = ms) and false
    interruptions (red vertical lines with a marker on the time axis); x = minutes from the
    first plotted event. Uses the same false-interruption source as the rate."""
    points = sorted(report.ttfa_points.items)
    falses = sorted(
        (report.false_turn_times if report.turns_with_false_field else report.false_livekit_times).items
    )
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, width - 24, 26, height - 36

    times = [t for t, _ in points] + falses
    t0 = min(times, default=0.0)
    t1 = max(max(times, default=0.0), t0 + 60)  # at least one minute wide
    ymax_raw = max((v for _, v in points), default=1000.0) * 1.1 or 1000.0
    ystep = _nice_step(ymax_raw)
    ymax = math.ceil(ymax_raw / ystep) * ystep
    xstep = _nice_step((t1 - t0) / 60)  # minutes

    def px(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * (right - left)

    def py(v: float) -> float:
        return bottom - v / ymax * (bottom - top)

    # grid and tick labels
    for i in range(int(ymax // ystep) + 1):
        v = i * ystep
        _line(img, left, py(v), right, py(v), GREY)
        _text(img, 4, int(py(v)) - 5, f"{v:g}", BLACK)
    m = 0.0
    while t0 + m * 60 <= t1 + 1e-9:
        x = px(t0 + m * 60)
        _line(img, x, top, x, bottom, GREY)
        _text(img, int(x) - 3, bottom + 6, f"{m:g}", BLACK)
        m += xstep
    _line(img, left, top, left, bottom, BLACK)
    _line(img, left, bottom, right, bottom, BLACK)
    _text(img, right - 34, bottom + 22, "MIN", BLACK)
    _text(img, left, 6, "TTFA MS", BLUE)
    _text(img, left + 80, 6, "FALSE INT", RED)

    for t in falses:
        x = px(t)
        _line(img, x, top, x, bottom, RED)
        img[bottom - 3 : bottom + 4, int(round(x)) - 3 : int(round(x)) + 4] = RED
    for (ta, va), (tb, vb) in zip(points, points[1:], strict=False):
        _line(img, px(ta), py(va), px(tb), py(vb), LIGHT_BLUE)
    for t, v in points:
        x, y = int(round(px(t))), int(round(py(v)))
        img[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3] = BLUE

    with open(png_path, "wb") as fh:
        fh.write(png_bytes(img))
