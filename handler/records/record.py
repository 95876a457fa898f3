"""The call record: one versioned JSON document per call, the same for every sink (docs/records.md).

Built from what the turn tracker and the session already know (turn records, the chat history,
livekit's usage, the fault ledger); pure functions here, so a record can be rebuilt from parts in
a test without a session. Privacy is applied here, before anything leaves the process: room names
hashed unless `records.room_names = "clear"`, runs of digits masked (`records.redact_digits`),
transcripts left out entirely with `records.transcripts = false`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

SCHEMA = 1
"""Bumped when a field changes meaning or goes away; new fields keep the number."""

END_REASONS = ("caller_left", "agent_ended", "stage_down", "drained", "error")
TURN_FIELDS = (
    "n",
    "answered",
    "user_stopped_at",
    "ttfa",
    "end_of_turn_delay",
    "transcription_delay",
    "llm_ttft",
    "llm_ttfs",
    "tts_ttfb",
    "interrupted",
    "false_interruptions",
)
"""A turn record's fields the call record keeps (seconds; the texts go to `transcript`)."""
MASK = "#"


def new_id() -> str:
    return uuid.uuid4().hex


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def room_id(name: str | None, mode: str) -> str | None:
    """The room as recorded: its name, or (by default) a stable hash of it, so calls of one room
    still group together without the caller's number that a telephony room's name can carry."""
    if not name:
        return None
    if mode == "clear":
        return name
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()[:16]


def redact(text: str, min_digits: int) -> str:
    """Runs of at least `min_digits` digits (spaces, dashes and dots between them allowed, as a
    card or phone number is spoken or written) masked digit by digit; 0 leaves text as it is."""
    if min_digits <= 0 or not text:
        return text
    pattern = re.compile(r"\d(?:[\s.\-]?\d){" + str(min_digits - 1) + ",}")
    return pattern.sub(lambda m: re.sub(r"\d", MASK, m.group()), text)


def fingerprint(settings: Any) -> str:
    """A short hash of the effective settings (secrets are not among them: they are read apart),
    so records of calls that ran with the same configuration group together."""
    blob = json.dumps(settings.data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def providers(settings: Any, registry: Any) -> dict[str, Any]:
    """Per stage the providers chosen: a chain or several sinks as a list, else the one name."""
    from handler.hookspecs import STAGES

    out: dict[str, Any] = {}
    for stage in STAGES:
        chosen = registry.selected(settings, stage)
        out[stage] = chosen if len(chosen) > 1 or stage == "records" else (chosen or [None])[0]
    return out


def worker_info() -> dict[str, Any]:
    from importlib import metadata

    from handler import __version__

    try:
        agents = metadata.version("livekit-agents")
    except metadata.PackageNotFoundError:
        agents = None
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "version": __version__,
        "livekit_agents": agents,
    }


def end_reason(detail: str | None, *, stage_down: bool, source: str) -> str:
    """One of END_REASONS from what the job or the command knows about the end."""
    text = (detail or "").lower()
    if stage_down:
        return "stage_down"
    if "drain" in text:
        return "drained"
    if "caller left" in text or "participant_disconnected" in text or "user_initiated" in text:
        return "caller_left"
    if "error" in text:
        return "error"
    if source == "simulate" or source == "bench":
        return "caller_left"  # the scripted caller said all it had to say and hung up
    return "agent_ended"


def faults_doc(faults: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Per stage, only the kinds that are not zero (an empty dict: nothing went wrong)."""
    out: dict[str, dict[str, int]] = {}
    for stage, counts in faults.items():
        nonzero = {k: v for k, v in asdict(counts).items() if v}
        if nonzero:
            out[stage] = nonzero
    return out


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def turn_doc(record: Any) -> dict[str, Any]:
    doc = {f: _round(getattr(record, f)) for f in TURN_FIELDS}
    doc["faults"] = faults_doc(record.faults)
    return doc


def transcript(history: Iterable[Any], turns: list[Any], *, redact_digits: int) -> list[dict[str, Any]]:
    """The chat history's messages as heard: `turn` is the user turn they belong to (the n-th user
    message starts turn n, as the turn tracker counts; an agent message before any user message is
    turn 0, a greeting). `at` is when the user stopped speaking, and when the agent's reply was
    first heard (the turn's end of speech plus its time to first audio); otherwise when the message
    was added. An agent reply cut short keeps the words that played (livekit's transcript
    synchronizer)."""
    heard = {t.n: t for t in turns}
    out: list[dict[str, Any]] = []
    turn = 0
    for item in history:
        if getattr(item, "type", None) != "message" or item.role not in ("user", "assistant"):
            continue
        text = item.text_content or ""
        if item.role == "user":
            turn += 1
        at = getattr(item, "created_at", None)
        if (t := heard.get(turn)) is not None and t.user_stopped_at is not None:
            if item.role == "user":
                at = t.user_stopped_at
            elif t.ttfa is not None:
                at = t.user_stopped_at + t.ttfa
        entry: dict[str, Any] = {
            "turn": turn,
            "role": "user" if item.role == "user" else "agent",
            "at": iso(at),
            "text": redact(text, redact_digits),
        }
        if item.role == "assistant" and getattr(item, "interrupted", False):
            entry["interrupted"] = True
        out.append(entry)
    return out


def usage_doc(usage: Any) -> dict[str, Any]:
    """livekit's per-model usage summed: LLM tokens in and out, TTS characters, STT audio seconds."""
    out = {"llm_input_tokens": 0, "llm_output_tokens": 0, "tts_characters": 0, "stt_audio_seconds": 0.0}
    for u in getattr(usage, "model_usage", None) or []:
        kind = getattr(u, "type", "")
        if kind == "llm_usage":
            out["llm_input_tokens"] += u.input_tokens
            out["llm_output_tokens"] += u.output_tokens
        elif kind == "tts_usage":
            out["tts_characters"] += u.characters_count
        elif kind == "stt_usage":
            out["stt_audio_seconds"] += getattr(u, "audio_duration", 0.0) or 0.0
    out["stt_audio_seconds"] = round(out["stt_audio_seconds"], 3)
    return out


def build(
    *,
    settings: Any,
    registry: Any,
    info: Mapping[str, Any],
    started_at: float,
    ended_at: float,
    turns: list[Any],
    summary: Any,
    history: Iterable[Any],
    usage: Any,
    detail: str | None,
    stage_down: bool,
) -> dict[str, Any]:
    """The call record (`SCHEMA`) for one session."""
    r = settings.section("records")
    source = info.get("source") or ("start" if info.get("job") else "simulate")
    reason = end_reason(detail, stage_down=stage_down, source=source)
    return {
        "schema": SCHEMA,
        "id": new_id(),
        "source": source,
        "job_id": info.get("job"),
        "room": room_id(info.get("room"), r["room_names"]),
        "scenario": info.get("simulation"),
        "agent_name": settings.get("worker.agent_name"),
        "worker": worker_info(),
        "env": settings.env,
        "settings_fingerprint": fingerprint(settings),
        "providers": providers(settings, registry),
        "started_at": iso(started_at),
        "ended_at": iso(ended_at),
        "duration_s": round(ended_at - started_at, 3),
        "end_reason": reason,
        "end_detail": redact(detail or "", r["redact_digits"]) or None,
        "turns": [turn_doc(t) for t in turns],
        "transcript": (
            transcript(history, turns, redact_digits=r["redact_digits"]) if r["transcripts"] else None
        ),
        "usage": usage_doc(usage),
        "faults": faults_doc(summary.faults) if summary is not None else {},
        "summary": summary_doc(summary),
    }


def summary_doc(summary: Any) -> dict[str, Any] | None:
    if summary is None:
        return None
    return {
        "turns": summary.turns,
        "answered": summary.answered,
        "minutes": round(summary.minutes, 3),
        "ttfa_p50": _round(summary.ttfa_p50),
        "ttfa_p95": _round(summary.ttfa_p95),
        "interruptions": summary.interruptions,
        "false_interruptions": summary.false_interruptions,
    }


def dumps(record: Mapping[str, Any]) -> str:
    """The one serialization every sink and the spool use (compact, keys in the record's order)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)
