"""What `calls stats` and `calls list` compute from records: the guide's key metrics over a store.

Percentiles are nearest-rank over every turn of the records (`handler.turns.percentile`), rates per
minute over the calls' own minutes (`handler.turns.per_minute`): the same meanings as the turn lines
and `simulate`'s report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from handler.pipeline.turns import per_minute, percentile
from handler.records.record import parse_iso

TIMINGS = {
    "ttfa": "time to first audio",
    "transcription_delay": "transcription delay",
    "end_of_turn_delay": "end of turn",
    "llm_ttft": "LLM first token",
    "tts_ttfb": "TTS first byte",
}
"""A turn's timings `stats` reports (p50/p95), with their names."""


def fault_total(faults: Mapping[str, Mapping[str, int]]) -> int:
    return sum(n for kinds in faults.values() for n in kinds.values())


def format_faults(faults: Mapping[str, Mapping[str, int]]) -> str:
    """`stt.retries=2 llm.errors=1`, "" when nothing went wrong."""
    return " ".join(f"{stage}.{kind}={n}" for stage, kinds in faults.items() for kind, n in kinds.items())


def ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def stats(records: list[Mapping[str, Any]], *, since: float | None = None, now: float | None = None) -> dict:
    """The key metrics over `records` (any order)."""
    turns = [t for r in records for t in r.get("turns") or []]
    timings = {}
    for key, name in TIMINGS.items():
        values = [t[key] for t in turns if t.get(key) is not None]
        timings[key] = {
            "name": name,
            "p50_ms": ms(percentile(values, 50)),
            "p95_ms": ms(percentile(values, 95)),
            "turns": len(values),
        }
    minutes = sum((r.get("duration_s") or 0) / 60 for r in records)
    false = sum(t.get("false_interruptions", 0) for t in turns)
    faults: dict[str, Counter[str]] = {}
    for r in records:
        for stage, kinds in (r.get("faults") or {}).items():
            faults.setdefault(stage, Counter()).update(kinds)
    starts = [parse_iso(r["started_at"]) for r in records]
    hours = None
    if starts:
        first = since if since is not None else min(starts)
        last = now if now is not None and since is not None else max(starts)
        hours = max((last - first) / 3600, 1.0)  # a rate over less than an hour says little
    usage: Counter[str] = Counter()
    for r in records:
        usage.update({k: v for k, v in (r.get("usage") or {}).items() if isinstance(v, int | float)})
    return {
        "calls": len(records),
        "turns": len(turns),
        "minutes": round(minutes, 2),
        "calls_per_hour": round(len(records) / hours, 2) if hours else None,
        "timings": timings,
        "interruptions": sum(bool(t.get("interrupted")) for t in turns),
        "false_interruptions": false,
        "false_interruptions_per_min": per_minute(false, minutes) if records else None,
        "faults": {stage: dict(kinds) for stage, kinds in sorted(faults.items())},
        "end_reasons": dict(Counter(r.get("end_reason") for r in records).most_common()),
        "usage": {k: round(v, 3) for k, v in usage.items()},
    }


def ttfa_p50(record: Mapping[str, Any]) -> int | None:
    return ms(percentile([t["ttfa"] for t in record.get("turns") or [] if t.get("ttfa") is not None], 50))


def flat(record: Mapping[str, Any]) -> dict[str, Any]:
    """One CSV row of a record: its ids, times, outcome, latency, usage and fault totals."""
    turns = record.get("turns") or []
    ttfas = [t["ttfa"] for t in turns if t.get("ttfa") is not None]
    usage = record.get("usage") or {}
    return {
        "id": record["id"],
        "started_at": record.get("started_at"),
        "ended_at": record.get("ended_at"),
        "duration_s": record.get("duration_s"),
        "env": record.get("env"),
        "source": record.get("source"),
        "agent_name": record.get("agent_name"),
        "job_id": record.get("job_id"),
        "room": record.get("room"),
        "end_reason": record.get("end_reason"),
        "turns": len(turns),
        "ttfa_p50_ms": ms(percentile(ttfas, 50)),
        "ttfa_p95_ms": ms(percentile(ttfas, 95)),
        "interruptions": sum(bool(t.get("interrupted")) for t in turns),
        "false_interruptions": sum(t.get("false_interruptions", 0) for t in turns),
        **{
            k: usage.get(k)
            for k in ("llm_input_tokens", "llm_output_tokens", "tts_characters", "stt_audio_seconds")
        },
        "faults": format_faults(record.get("faults") or {}),
    }


def sort_newest(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(records, key=lambda r: r.get("started_at") or "", reverse=True)
