"""The fault matrix: each stage x each fault, with and without a fallback, at the stage level.

One request goes through the stage exactly as a session builds it (`fallback.build_stage`: the
real livekit plugin behind our resilience layer, a FallbackAdapter over [cloud, local] when
chained) against the protocol-faithful fake server, which injects the fault and counts every
attempt. Every cell checks the invariants of issue 14, not exact timings (one core may be busy):

- no hang: the request ends within the bound stated in docs/resilience.md (`worst_case`), plus slack;
- the provider never sees more than MAX_RETRIES + 1 attempts for the request;
- the fault is reported: counted on the fault ledger, or (a malformed message a plugin skips)
  logged at WARNING or above;
- the request is answered, or it failed with an error that the ledger counts.

The whole matrix runs once (marker `faults`), under about a minute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from support import stage_faults
from support.stage_faults import BURSTS, FAULTS, PATHS, Outcome

from handler.fakes import ElevenLabsServer, Fault, OpenAIServer, ProviderServer, SonioxServer
from handler.pipeline import http
from handler.resilience import breaker
from handler.resilience.ledger import StageFaults
from handler.sim import cloudsim

pytestmark = pytest.mark.faults

MAX_RETRIES = 2
TIMEOUT = 1.0
BACKOFF = 0.05
FAST = {
    "retry.max_retries": MAX_RETRIES,
    "http.timeout": TIMEOUT,
    "retry.backoff_initial": BACKOFF,
    "retry.jitter": 0.0,
    "http.prewarm": False,
    "resilience.probe_initial": 0.2,
}
SLOW_PROBES = {"resilience.probe_initial": 30.0, "resilience.probe_max": 60.0}
"""A provider that failed is asked again only 30 s later: longer than any test here."""
SERVERS: dict[str, Callable[..., ProviderServer]] = {
    "stt": SonioxServer,
    "llm": OpenAIServer,
    "tts": ElevenLabsServer,
}
SLACK = 2.5
"""Seconds of slack on every time bound: scheduling on a busy core, the local fallback's work."""


def worst_case(attempts: int = MAX_RETRIES + 1, timeout: float = TIMEOUT) -> float:
    """The bound on what one request can cost (docs/resilience.md): every attempt cut at the timeout, plus
    livekit's waits between them (0.1 s, then `retry.backoff_initial`)."""
    return attempts * timeout + 0.1 + (attempts - 2) * BACKOFF


@pytest.fixture(autouse=True)
async def fresh_pool() -> AsyncIterator[None]:
    yield
    await http.close_shared_session()


async def stage_request(
    stage: str,
    srv: ProviderServer,
    *,
    chained: bool,
    pace: float = 0.0,
    base_url: str | None = None,
    ride_out: bool = False,
    **overrides: Any,
) -> Outcome:
    """One request through the stage as a session builds it, with production's settings at the
    tuned limits (FAST)."""
    settings, registry = cloudsim.load_checked("production")
    return await stage_faults.stage_request(
        stage,
        srv,
        settings,
        registry,
        chained=chained,
        pace=pace,
        base_url=base_url,
        overrides={**FAST, **overrides},
        ride_out=ride_out,
    )


def reported(outcome: Outcome, caplog: pytest.LogCaptureFixture) -> bool:
    f = outcome.faults
    if f.retries or f.errors or f.timeouts or f.fallbacks or f.lost:
        return True
    return any(r.levelno >= logging.WARNING for r in caplog.records)


MID_STREAM = ("stall", "disconnect", "malformed")
CELLS = [(stage, fault) for stage in ("stt", "llm", "tts") for fault in FAULTS]


@pytest.mark.parametrize("chained", [False, True], ids=["alone", "with-fallback"])
@pytest.mark.parametrize(("stage", "fault"), CELLS, ids=[f"{s}-{f}" for s, f in CELLS])
async def test_a_fault_is_bounded_reported_and_the_request_answered_or_failed_for_good(
    stage: str, fault: str, chained: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with SERVERS[stage](faults=FAULTS[fault]()) as srv:
        url = srv.base_url  # type: ignore[attr-defined]
        if fault == "down":
            await srv.stop()
        # a session's audio keeps coming in real time: the backup STT hears what follows the switch
        pace = 1.0 if stage == "stt" and chained and fault == "down" else 0.0
        outcome = await stage_request(stage, srv, chained=chained, base_url=url, pace=pace)

    cell = f"{stage} x {fault} ({'with' if chained else 'no'} fallback): {outcome}"
    # bounded: attempts per request, time per request
    assert outcome.attempts <= MAX_RETRIES + 1, cell
    assert outcome.elapsed <= worst_case() + (worst_case() if chained else 0) + SLACK, cell
    # reported: the fault shows on the ledger or in the log
    assert reported(outcome, caplog), cell
    # answered, or failed for good with an error the ledger counts
    if not outcome.answered:
        assert outcome.error is not None and outcome.faults.errors >= 1, cell
    if chained and not (stage == "llm" and fault in MID_STREAM):
        # the chain's next provider answers whatever the primary does (livekit hands an LLM reply
        # that already streamed words to nobody: repeating them would be worse; it is an error)
        assert outcome.answered, cell
    if fault in ("429", "500", "503", "late_first_byte"):  # one failed attempt, then the retry works
        assert outcome.answered and outcome.attempts == 2 or chained, cell
    if fault == "down" and not chained:
        assert outcome.error is not None and outcome.faults.errors >= 1, cell
    if stage == "stt" and fault in ("stall", "disconnect"):
        # the utterance in flight is replayed on the next attempt: nothing is lost
        assert outcome.answered and outcome.attempts == 2 and not outcome.faults.lost, cell


# ------------------------------------------------------------------------------ the STT stream


async def test_a_soniox_handshake_that_never_answers_is_tried_max_retries_plus_one_times() -> None:
    # livekit 1.8.9 resets its STT retry budget when an attempt outlived the timeout, which a
    # timed-out handshake always does: without our bound this is retried forever
    async with SonioxServer(faults=[Fault.slow_first_byte(30.0)] * 10) as srv:
        outcome = await stage_request("stt", srv, chained=False)
        await asyncio.sleep(2 * TIMEOUT)  # nothing comes after the give-up either
        assert srv.stats.attempts(PATHS["stt"]) == MAX_RETRIES + 1
    assert outcome.error is not None and not outcome.answered
    assert outcome.faults.timeouts == MAX_RETRIES + 1
    assert outcome.faults.retries == MAX_RETRIES and outcome.faults.errors == 1
    assert outcome.faults.lost == 1  # the user's utterance went with it, and says so
    assert outcome.elapsed <= worst_case() + SLACK


async def test_a_stream_the_provider_rotates_mid_utterance_loses_no_speech() -> None:
    # the fake closes each session after max_session seconds, as Soniox does at its session limit
    async with SonioxServer(max_session=1.2) as srv:
        outcome = await stage_request("stt", srv, chained=False, pace=1.0)
        assert srv.stats.events["sessions"] == 2  # rotated once, mid-utterance
    assert outcome.answered == "hello" and outcome.error is None
    assert srv.transcripts == ["hello"]  # the new stream heard the whole utterance, once
    assert not outcome.faults.any  # a rotation is the provider's routine, not a fault


async def test_a_provider_that_stays_down_is_probed_once_per_interval_per_process() -> None:
    async with SonioxServer(faults=[Fault.http(503)] * 50) as srv:
        first = await stage_request("stt", srv, chained=True, pace=1.0, **SLOW_PROBES)
        assert srv.stats.attempts(PATHS["stt"]) == MAX_RETRIES + 1
        # the next call (a new session in the same process) goes straight to the backup
        second = await stage_request("stt", srv, chained=True, pace=1.0, **SLOW_PROBES)
        assert srv.stats.attempts(PATHS["stt"]) == MAX_RETRIES + 1
    assert first.answered and second.answered  # by the local backup
    assert first.faults == StageFaults(retries=MAX_RETRIES, errors=1, fallbacks=1)
    assert second.faults == StageFaults(fallbacks=1)  # no attempt spent on a provider known down
    key = next(iter(breaker._breakers))
    assert breaker._breakers[key].down and breaker._breakers[key].retry_in() > 20


async def test_a_probe_is_one_attempt_and_its_success_makes_the_provider_healthy() -> None:
    async with SonioxServer(faults=[Fault.http(503)] * 4) as srv:
        await stage_request("stt", srv, chained=False)  # 3 attempts: down
        await asyncio.sleep(0.25)  # probe_initial 0.2 s
        probed = await stage_request("stt", srv, chained=False)  # one attempt: 503, still down
        assert srv.stats.attempts(PATHS["stt"]) == MAX_RETRIES + 2
        await asyncio.sleep(0.45)  # the wait doubled
        back = await stage_request("stt", srv, chained=False)
        assert srv.stats.attempts(PATHS["stt"]) == MAX_RETRIES + 3
    assert probed.error is not None and probed.faults.errors == 1 and probed.faults.retries == 0
    assert back.answered == "hello"
    assert not any(b.down for b in breaker._breakers.values())


@pytest.mark.parametrize("stage", ["llm", "tts"])
async def test_a_chain_member_that_is_down_is_not_asked_again_before_its_probe_is_due(stage: str) -> None:
    # livekit's adapter probes a failed provider again on every request it hands to the next one
    async with SERVERS[stage](faults=[Fault.http(503)] * 50) as srv:
        outcomes = [await stage_request(stage, srv, chained=True, **SLOW_PROBES) for _ in range(4)]
        await asyncio.sleep(0.3)  # any background probe would have landed by now
        seen = srv.stats.attempts(PATHS[stage])
    assert all(o.answered for o in outcomes)  # by the local backup
    assert seen == MAX_RETRIES + 1  # the first request's attempts, then nothing for 30 s
    assert [o.faults.fallbacks for o in outcomes] == [1, 1, 1, 1]


@pytest.mark.parametrize("fault", ["503", "slow"])
async def test_a_lone_stt_rides_a_burst_out_and_no_request_sees_more_than_max_retries_plus_one_attempts(
    fault: str,
) -> None:
    # issue 24: six handshakes in a row fail (the issue saw five on one stream, and the call end);
    # each request spends at most MAX_RETRIES + 1 attempts, the probes one each, and the utterance
    # held all along is recognized once the provider answers again
    burst = [BURSTS[fault]() for _ in range(6)]
    async with SonioxServer(faults=burst) as srv:
        outcome = await stage_request("stt", srv, chained=False, pace=1.0, ride_out=True)
        seen = srv.stats.attempts(PATHS["stt"])
    assert outcome.answered == "hello" and outcome.error is None, outcome
    assert seen == len(burst) + 1  # every failed handshake, then the one that answered
    assert sum(outcome.requests) == len(burst), outcome.requests
    assert all(n <= MAX_RETRIES + 1 for n in outcome.requests), outcome.requests
    assert outcome.requests[0] == MAX_RETRIES + 1 and set(outcome.requests[1:]) == {1}, outcome.requests
    assert outcome.faults.errors == len(outcome.requests) and not outcome.faults.lost, outcome.faults
    assert outcome.faults.retries == len(burst) - len(outcome.requests), outcome.faults
