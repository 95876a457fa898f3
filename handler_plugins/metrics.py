"""Observer `metrics`: one log line per turn and one summary per session, for `start` and `simulate`.

Per turn (logger `handler.metrics`, message `turn`): the fields of `handler.pipeline.turns.LINE_FIELDS`,
written from the turn tracker's record (`turn_completed`): time to first audio (livekit's e2e
latency: end of user speech -> agent audio) and its parts, whether the reply was interrupted or
paused by a false interruption, and the retries and errors seen since the previous turn. At
session end (`session_summary`), message `session summary`: turns, p50/p95 time to first audio,
false interruptions per minute, retries, errors, LLM tokens and TTS characters. This plugin reads
no session event itself: the tracker in the core does, once, for every observer.

These lines are the product's output, so `handler.metrics` logs at INFO even when the root level
is WARNING (production): a production session logs its turns, its summary and what went wrong.

The same numbers feed Prometheus histograms and counters (`voice_handler_*`), which the worker
serves on `worker.prometheus_port` (see handler/pipeline/worker.py for the multi-process collection).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Histogram

from handler.api import (
    FAULT_KINDS,
    SUMMARY_MESSAGE,
    TURN_MESSAGE,
    SessionSummary,
    TurnRecord,
    hookimpl,
    log_fields,
    to_line,
)

logger = logging.getLogger("handler.metrics")
logger.setLevel(logging.INFO)

# the parts of time to first audio: Prometheus label `stage` -> the record's attribute
STAGES = {
    "eou": "end_of_turn_delay",
    "transcription": "transcription_delay",
    "llm_ttft": "llm_ttft",
    "tts_ttfb": "tts_ttfb",
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


def _count_faults(record: TurnRecord) -> None:
    for stage, faults in record.faults.items():
        for kind in FAULT_KINDS:
            if n := getattr(faults, kind):
                FAULTS.labels(stage, kind).inc(n)


@hookimpl(trylast=True)
def turn_completed(record: TurnRecord, info: Mapping[str, Any]) -> None:
    logger.info(TURN_MESSAGE, extra=log_fields(**to_line(record)))
    TURNS.inc()
    INTERRUPTIONS.inc(record.interrupted)
    FALSE_INTERRUPTIONS.inc(record.false_interruptions)
    RETRIES.inc(record.retries)
    ERRORS.inc(record.errors)
    _count_faults(record)
    if record.ttfa is not None:
        TTFA.observe(record.ttfa)
    for stage, attr in STAGES.items():
        if (seconds := getattr(record, attr)) is not None:
            STAGE.labels(stage).observe(seconds)


@hookimpl(trylast=True)
def session_summary(summary: SessionSummary, info: Mapping[str, Any]) -> None:
    logger.info(SUMMARY_MESSAGE, extra=log_fields(**summary.to_line()))
    if (rest := summary.unanswered_faults) is not None:  # a last reply that failed for good
        RETRIES.inc(rest.retries)
        ERRORS.inc(rest.errors)
        _count_faults(rest)
