"""Call records in the stored shape (schema 1, docs/records.md), made up in bulk: what the Calls
pages' tests and measurements/web_pages.py fill a store with. Deterministic for a seed."""

from __future__ import annotations

import random
import uuid
from typing import Any

from handler.records.record import SCHEMA, iso

ENVS = ("dev", "fast", "stable", "production")
REASONS = ("caller_left", "caller_left", "caller_left", "agent_ended", "stage_down", "error")
QUESTIONS = ("what is the weather like today", "where is my order", "what time do you open tomorrow")


def record(
    started_at: float, rng: random.Random, *, env: str | None = None, faults: bool | None = None
) -> dict[str, Any]:
    """One call of 1-6 turns starting at `started_at` (epoch s)."""
    n = rng.randint(1, 6)
    turns, transcript, t = [], [], started_at + 1.0
    faulty = rng.random() < 0.1 if faults is None else faults
    call_faults: dict[str, dict[str, int]] = {}
    for i in range(1, n + 1):
        eou = rng.uniform(0.4, 0.9)
        ttft, ttfs, ttfb = rng.uniform(0.2, 0.6), 0.0, rng.uniform(0.05, 0.3)
        ttfs = ttft + rng.uniform(0.05, 0.3)
        turn_faults = {}
        if faulty and i == 1:
            stage = rng.choice(("stt", "llm", "tts"))
            turn_faults = {stage: {"retries": 1}}
            call_faults.setdefault(stage, {}).setdefault("retries", 0)
            call_faults[stage]["retries"] += 1
        ttfa = eou + ttfs + ttfb + rng.uniform(0.02, 0.08)
        turns.append(
            {
                "n": i,
                "answered": True,
                "user_stopped_at": round(t, 3),
                "ttfa": round(ttfa, 4),
                "end_of_turn_delay": round(eou, 4),
                "transcription_delay": round(eou - 0.01, 4),
                "llm_ttft": round(ttft, 4),
                "llm_ttfs": round(ttfs, 4),
                "tts_ttfb": round(ttfb, 4),
                "interrupted": False,
                "false_interruptions": int(rng.random() < 0.05),
                "faults": turn_faults,
            }
        )
        transcript += [
            {"turn": i, "role": "user", "at": iso(t), "text": rng.choice(QUESTIONS)},
            {"turn": i, "role": "agent", "at": iso(t + ttfa), "text": "Here is what I know about that."},
        ]
        t += ttfa + rng.uniform(3, 8)
    ttfas = sorted(x["ttfa"] for x in turns)
    return {
        "schema": SCHEMA,
        "id": uuid.UUID(int=rng.getrandbits(128)).hex,
        "source": "start",
        "job_id": f"AJ_{rng.getrandbits(40):x}",
        "room": f"sha256:{rng.getrandbits(64):016x}",
        "scenario": None,
        "agent_name": "voice-handler",
        "worker": {"host": "test", "pid": 1, "version": "0.1.0", "livekit_agents": "1.8.9"},
        "env": env or rng.choice(ENVS),
        "settings_fingerprint": "0" * 16,
        "providers": {"stt": "local", "llm": "local", "tts": "local"},
        "started_at": iso(started_at),
        "ended_at": iso(t),
        "duration_s": round(t - started_at, 3),
        "end_reason": "stage_down" if faulty and rng.random() < 0.3 else rng.choice(REASONS),
        "end_detail": None,
        "turns": turns,
        "transcript": transcript,
        "usage": {
            "llm_input_tokens": 100 * n,
            "llm_output_tokens": 20 * n,
            "tts_characters": 40 * n,
            "stt_audio_seconds": 2.0 * n,
        },
        "faults": call_faults,
        "summary": {
            "turns": n,
            "answered": n,
            "minutes": round((t - started_at) / 60, 3),
            "ttfa_p50": ttfas[(len(ttfas) - 1) // 2],
            "ttfa_p95": ttfas[-1],
            "interruptions": 0,
            "false_interruptions": sum(x["false_interruptions"] for x in turns),
        },
    }


def many(count: int, now: float, span: float, seed: int = 1) -> list[dict[str, Any]]:
    """`count` calls spread over the `span` seconds before `now`, newest first."""
    rng = random.Random(seed)
    starts = sorted((now - rng.uniform(0, span) for _ in range(count)), reverse=True)
    return [record(s, rng) for s in starts]


def fill(store: Any, records: list[dict[str, Any]]) -> None:
    """Write `records` into a SQL store in one transaction (a sink writes one per call)."""
    from handler.records.store import INSERT, row

    store._ensure_schema()
    store._run(lambda cur: cur.executemany(store._sql(INSERT), [row(r) for r in records]))
