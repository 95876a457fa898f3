"""Reading log lines: inputs opened and read in bounded pieces, and each line's time, level,
message and fields recognised (see the package's docstring for the formats). Turn lines become
`handler.pipeline.turns.TurnRecord`s through the one field list, `handler.pipeline.turns.from_line`."""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

MAX_LINE = 1 << 20  # bytes; a longer "line" (binary junk without newlines) is cut and flagged
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


class LogInputError(Exception):
    """A log input cannot be opened (missing, a directory, unreadable); the CLI exits 2."""


@dataclass(frozen=True)
class Parsed:
    ts: float | None
    """Epoch seconds (UTC) or None."""
    level: str | None
    msg: str | None
    """The project's message (`turn`, `session summary`, ...) for project lines, else None."""
    fields: dict[str, Any]
    bad_json: bool
    bad_ts: bool
    """The line names a time that cannot be one (month 13, a number where a string belongs)."""


def parse_line(text: str) -> Parsed:
    """(epoch ts, LEVEL, project message, fields, invalid JSON, impossible time) of a line whose
    ANSI codes are already stripped; unknown parts are None/{}."""
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:  # truncated or invalid JSON: grep only
            return Parsed(None, None, None, {}, True, False)
        if isinstance(obj, dict):
            raw_ts = next((obj[k] for k in ("ts", "timestamp", "time", "asctime") if k in obj), None)
            ts = _ts(raw_ts) if isinstance(raw_ts, str) else None
            level = obj.get("level", obj.get("levelname"))
            level = level.upper() if isinstance(level, str) else None
            msg = obj.get("msg", obj.get("message"))
            msg = msg.strip() if isinstance(msg, str) else None
            return Parsed(ts, level, msg, obj, False, raw_ts is not None and ts is None)
        return Parsed(None, None, None, {}, False, False)

    m = _TS.match(text)
    if m is None:
        # no time: a level only as the first token ("ERROR:root:boom" / "ERROR boom")
        first = text.split(None, 1)[0].split(":")[0] if text else ""
        return Parsed(None, first if first in LEVELS else None, None, {}, False, False)
    ts = _epoch(m)
    rest = text[m.end() :]
    tokens = rest.split(None, 3)
    # project text format: "<ts> <LEVEL> <logger> <message> key=value..."
    if len(tokens) >= 3 and tokens[0] in LEVELS:
        body = tokens[2] + (" " + tokens[3] if len(tokens) > 3 else "")
        kv = _KV.search(body)
        msg = (body[: kv.start()] if kv else body).strip()
        return Parsed(ts, tokens[0], msg, dict(_KV.findall(body)), False, ts is None)
    # foreign formats ("<ts> - LEVEL name - msg", "<ts> - name - LEVEL - msg")
    head = [t.strip("[]:-|,") for t in rest.split(None, 4)[:4]]
    level = next((t for t in head if t in LEVELS), None)
    return Parsed(ts, level, None, {}, False, ts is None)


def _ts(s: str) -> float | None:
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


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    ms = int(round(t * 1000))
    base = fmt_time(ms // 1000, "%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ms % 1000:03d}Z"


def minute_iso(minute: int) -> str:
    return fmt_time(minute * 60, "%Y-%m-%dT%H:%MZ")


def fmt_time(epoch: int, fmt: str) -> str:
    return time.strftime(fmt, time.gmtime(epoch))


def read_lines(fh: IO[bytes]) -> Iterator[tuple[bytes, bool]]:
    """Yield (line, overlong) with each read capped at MAX_LINE bytes; the rest of an over-long
    line is skipped so a newline-free binary blob cannot exhaust memory."""
    while chunk := fh.readline(MAX_LINE):
        if len(chunk) == MAX_LINE and not chunk.endswith(b"\n"):
            while (rest := fh.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            yield chunk, True
        else:
            yield chunk, False
