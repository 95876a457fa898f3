"""Issue 21's record-correctness bug: with the Soniox handshake never answering, the turns the
recognizer lost said `retries=0 errors=0` (their faults went to no turn), and the apology the
agent says when it ends the call counted as a premature cut-off of the turn it played over. Faults
belong to the turn they happened in; the agent's own announcement cuts no one off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from handler.fakes import Fault
from handler.pipeline import http
from handler.pipeline.turns import add_faults
from handler.sim import cloudsim, scenario
from handler.sim.runner import simulate

pytestmark = pytest.mark.realtime

FAST = {"http.timeout": 1.0, "retry.max_retries": 2, "retry.backoff_initial": 0.05, "retry.jitter": 0.0}


@pytest.fixture(autouse=True)
async def fresh_pool() -> AsyncIterator[None]:
    yield
    await http.close_shared_session()


async def test_turns_the_recognizer_lost_carry_its_faults_and_the_apology_cuts_no_one_off(
    tmp_path: Path,
) -> None:
    sc = scenario.load(scenario.resolve("qa"))
    settings, registry = cloudsim.load_checked("production")
    settings = settings.with_overrides({**FAST, "records.sinks": []}, "test")
    async with cloudsim.running(settings, registry, sc.recognizer_phrases()) as (cloud, fakes):
        fakes.stt.faults.push(*[Fault.slow_first_byte(60.0)] * 100)  # no handshake ever answers
        report, _ = await simulate(cloud, registry, sc)
    records = [t.record for t in report.turns if t.record is not None]
    # the first turn's utterance went with the failed stream: its record says so
    first = report.turns[0].record
    assert first is not None and not first.answered, report.to_dict()
    assert first.faults["stt"].errors >= 1 and first.faults["stt"].lost >= 1, first.faults
    # every fault the session counted sits on a turn (none after the last one, none on no turn)
    on_turns = add_faults(r.faults for r in records)["stt"]
    assert on_turns.errors >= 2 and on_turns.timeouts >= on_turns.errors, on_turns
    assert all(t.premature_cutoffs == 0 for t in report.turns), [t.notes for t in report.turns]
    assert all(not t.answered for t in report.turns)
