"""The fault ledger and the provider breaker: the counting and the probing schedule the rest of
the resilience layer relies on."""

from __future__ import annotations

from livekit.agents import APIConnectionError, APIStatusError, APITimeoutError
from livekit.agents.stt import STTError

from handler.resilience.breaker import Breaker
from handler.resilience.ledger import FaultLedger, StageFaults, format_faults


def error(exc: Exception, recoverable: bool) -> STTError:
    return STTError(timestamp=0.0, label="test", error=exc, recoverable=recoverable)


def test_a_wrapped_timeout_counts_as_a_timeout_and_a_retry_or_an_error() -> None:
    ledger = FaultLedger()
    try:
        try:
            raise APITimeoutError("cut at the timeout")
        except APITimeoutError as timeout:
            raise APIStatusError("Could not synthesize") from timeout  # what the ElevenLabs plugin raises
    except APIStatusError as wrapped:
        ledger.on_provider_error("tts", error(wrapped, recoverable=True))
    ledger.on_provider_error("tts", error(APIConnectionError("refused"), recoverable=False))
    assert ledger.totals()["tts"] == StageFaults(retries=1, timeouts=1, errors=1)
    assert ledger.count("errors") == 1 and ledger.count("retries", "stt") == 0


def test_turn_counts_start_over_each_turn_and_totals_keep_everything() -> None:
    ledger = FaultLedger()
    ledger.note("llm", "retries", 2)
    ledger.note("llm", "fallbacks")
    assert format_faults(ledger.since_last_turn()) == "llm.retries=2,llm.fallbacks=1"
    assert format_faults(ledger.since_last_turn()) == ""
    ledger.note("stt", "lost")
    assert format_faults(ledger.totals()) == "stt.lost=1,llm.retries=2,llm.fallbacks=1"


def test_a_down_provider_gets_one_probe_per_interval_and_the_interval_doubles_up_to_the_cap() -> None:
    now = [100.0]
    b = Breaker("stt.soniox@x", probe_initial=2.0, probe_max=5.0, clock=lambda: now[0])
    assert b.admit() and not b.down
    b.failure()  # a request spent its attempts
    assert not b.admit() and b.retry_in() == 2.0
    now[0] += 2.0
    assert b.admit()  # the probe
    assert not b.admit()  # only one at a time
    b.failure()
    assert b.retry_in() == 4.0
    now[0] += 4.0
    assert b.admit()
    b.failure()
    assert b.retry_in() == 5.0  # capped
    now[0] += 5.0
    assert b.admit()
    b.success()
    assert not b.down and b.admit() and b.admit()  # healthy: no gate
