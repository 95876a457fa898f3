"""A burst is not an outage (issue 24): a few seconds of provider errors cost a caller's turn time,
never the call. Whole simulated calls over the cloud fakes, with production's settings at the
tuned limits (HTTP_TIMEOUT 1 s, MAX_RETRIES 2) and production's resilience settings (a stage is
down for good after `resilience.down_for`, 20 s, without a success).

The burst matrix is representative, not exhaustive: on each stage, bursts of 3, 4 and 6 consecutive
requests meeting a 429, 500, 503 or a slow handshake (past the timeout), some at the call's start
and some mid-call (once the first reply has been synthesized: the provider drops its connections
and fails the next requests). Every cell: every turn answered (late is fine, within
`late_reply_bound`), no apology, no early end, every failed request counted on a turn. The
outages (a provider down for the whole call) still end the call, with the apology when the TTS
works, within the bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.stage_faults import BurstCall, burst_call

from handler.pipeline import http
from handler.resilience import breaker
from handler.resilience.decider import late_reply_bound
from handler.sim import cloudsim, scenario

pytestmark = pytest.mark.realtime

MAX_RETRIES = 2
FAST = {
    "http.timeout": 1.0,
    "retry.max_retries": MAX_RETRIES,
    "retry.backoff_initial": 0.05,
    "retry.jitter": 0.0,
}
APOLOGY = "Sorry, we have to stop here."
HOLD = "One moment, please."
SLACK = 5.0
"""Seconds of slack on the time bounds: start-up, scheduling on a busy core."""
TURNS = ("what is the weather like today", "where is my order")

# (stage, fault, consecutive requests, mid-call): each stage meets 3, 4 and 6 in a row, at the
# start and mid-call, a slow handshake among them; 429, 500 and 503 each on every stage
CELLS = [
    ("stt", "503", 3, False),
    ("stt", "slow", 4, True),
    ("stt", "429", 6, False),
    ("llm", "429", 3, True),
    ("llm", "500", 4, False),
    ("llm", "slow", 6, True),
    ("tts", "slow", 3, False),
    ("tts", "503", 4, True),
    ("tts", "500", 6, True),
]


@pytest.fixture(autouse=True)
async def fresh_pool() -> AsyncIterator[None]:
    breaker.reset_all()  # provider health is per process: each call starts healthy
    yield
    await http.close_shared_session()


def settings_and_scenario(tmp_path: Path, **overrides: object) -> tuple[object, object, scenario.Scenario]:
    path = tmp_path / "two.toml"
    path.write_text("".join(f'[[turns]]\nsay = "{t}"\npause = 0.2\n' for t in TURNS))
    settings, registry = cloudsim.load_checked("production")
    settings = settings.with_overrides({**FAST, "resilience.apology": APOLOGY, **overrides}, "test")
    return settings, registry, scenario.load(path)


def stage_faults(call: BurstCall, stage: str) -> list[int]:
    """Failed attempts (retried or not) of `stage` counted on each turn."""
    return [
        t.record.faults[stage].retries + t.record.faults[stage].errors if t.record is not None else 0
        for t in call.report.turns
    ]


@pytest.mark.parametrize(
    ("stage", "fault", "count", "mid"),
    CELLS,
    ids=[f"{s}-{n}x{f}-{'mid' if m else 'start'}" for s, f, n, m in CELLS],
)
async def test_a_burst_costs_the_turn_time_never_the_call(
    stage: str, fault: str, count: int, mid: bool, tmp_path: Path
) -> None:
    settings, registry, sc = settings_and_scenario(tmp_path)
    call = await burst_call(
        stage, fault, count, mid_call=mid, settings=settings, registry=registry, scenario=sc
    )
    report = call.report
    cell = f"{stage} {count} x {fault} {'mid-call' if mid else 'at start'}: {report.to_dict()}"
    assert call.faulted == count, cell  # the burst happened, whole
    # no early end, no apology: every turn answered, late within the bound
    assert report.ended is None, cell
    assert [t.kind for t in report.turns] == ["turn"] * len(TURNS), cell
    assert all(t.reply_text for t in report.turns), cell
    assert not any(APOLOGY in text for text in call.spoken), cell
    bound = late_reply_bound(settings)
    assert all(t.ttfa_played is not None and t.ttfa_played < bound + SLACK for t in report.turns), cell
    # every failed request counted, on the turns of the call (a turn line each)
    counted = stage_faults(call, stage)
    assert sum(counted) >= count, (counted, cell)
    if not mid:  # the burst met the first turn's requests
        assert counted[0] > 0, (counted, cell)
    elif stage != "stt":  # the first reply was whole before the burst: its faults are the next turn's
        assert counted[0] == 0 and counted[1] > 0, (counted, cell)
    for t in report.turns:  # each request that failed for good spent at most MAX_RETRIES + 1 attempts
        faults = t.record.faults[stage]
        assert faults.retries <= MAX_RETRIES * (faults.errors + 1), (t.n, faults, cell)
        assert not faults.lost, cell


@pytest.mark.parametrize("stage", ["stt", "llm", "tts"])
async def test_a_provider_down_for_the_whole_call_still_ends_it_within_the_bound(
    stage: str, tmp_path: Path
) -> None:
    settings, registry, sc = settings_and_scenario(tmp_path)
    call = await burst_call(
        stage, "down", 0, mid_call=False, settings=settings, registry=registry, scenario=sc
    )
    report = call.report
    assert report.ended is not None and report.ended.startswith(f"{stage} is down"), report.to_dict()
    # the caller hears the apology unless the TTS is what is down
    assert any(APOLOGY in text for text in call.spoken) == (stage != "tts"), call.spoken
    # decided after down_for without a success, at most one probe wait and one request later, and
    # the apology's time
    bound = late_reply_bound(settings) + settings.get("resilience.apology_timeout")
    assert settings.get("resilience.down_for") <= call.elapsed < bound + SLACK, call.elapsed
    assert not any(t.reply_text and t.reply_text != APOLOGY for t in report.turns), report.to_dict()


async def test_with_a_hold_line_a_caller_kept_waiting_hears_it_once_and_then_the_answer(
    tmp_path: Path,
) -> None:
    settings, registry, sc = settings_and_scenario(
        tmp_path, **{"resilience.hold_line": HOLD, "resilience.hold_after": 2.0}
    )
    # six slow LLM requests: the first turn waits about 10 s for its reply
    call = await burst_call(
        "llm", "slow", 6, mid_call=False, settings=settings, registry=registry, scenario=sc
    )
    assert call.report.ended is None and all(t.reply_text for t in call.report.turns), call.report.to_dict()
    assert sum(HOLD in text for text in call.spoken) == 1, call.spoken
    assert not any(APOLOGY in text for text in call.spoken), call.spoken
    # the hold line is no reply: the turn's record is the answer that followed it
    assert all(t.reply_text != HOLD for t in call.report.turns), call.report.to_dict()
