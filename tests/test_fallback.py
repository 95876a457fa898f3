"""Per-stage fallback from config: `<stage>.fallback` builds livekit's FallbackAdapter over the named
providers; when the primary fails the turn is answered by the next one, and a recovered primary is
used again. The failures come from the fault-injecting provider servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import llm, stt, tts

from handler.config import ConfigError
from handler.fakes import Fault
from handler.pipeline import http
from handler.pipeline.session import build_session, make_runtime
from handler.registry import load_checked
from handler.sim import cloudsim, scenario, simulate

CHAINS = {
    "stt.fallback": ["soniox", "local"],
    "llm.fallback": ["openai", "local"],
    "tts.fallback": ["elevenlabs", "local"],
}
FAST = {"http.timeout": 1.0, "retry.max_retries": 2, "retry.backoff_initial": 0.05, "retry.jitter": 0.0}


@pytest.fixture(autouse=True)
async def fresh_pool() -> AsyncIterator[None]:
    yield
    await http.close_shared_session()


def problems(env: str, **overrides: Any) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_checked(env, overrides=overrides, overrides_source="test")
    return [str(p) for p in e.value.problems]


# ------------------------------------------------------------------------------ configuration


def test_no_fallback_by_default_and_a_chain_lists_the_providers_in_order() -> None:
    settings, registry = cloudsim.load_checked("production")
    assert [registry.selected(settings, s) for s in ("stt", "llm", "tts")] == [
        ["soniox"],
        ["openai"],
        ["elevenlabs"],
    ]
    chained = settings.with_overrides(CHAINS, "test")
    assert registry.selected(chained, "stt") == ["soniox", "local"]
    assert registry.validate(chained) == []
    assert "fallback" not in registry.options(chained, "stt", "soniox")  # not a provider option


def test_an_unknown_fallback_provider_is_named_with_the_available_ones() -> None:
    (problem,) = problems("dev", **{"stt.fallback": ["local", "sonix"]})
    assert problem == (
        "stt.fallback = ['local', 'sonix'] (from test): "
        "unknown stt provider 'sonix'; available: local, soniox"
    )


def test_the_chain_must_start_with_the_provider_and_name_each_provider_once() -> None:
    found = problems("dev", **{"llm.fallback": ["openai", "local", "local"]})
    assert any("must start with llm.provider ('local')" in p for p in found)
    assert any("lists 'local' more than once" in p for p in found)


def test_every_provider_in_the_chain_needs_its_secrets_and_passes_its_checks() -> None:
    found = problems("dev", **{"stt.fallback": ["local", "soniox"], "stt.soniox.max_endpoint_delay_ms": 100})
    assert any(p.startswith("SONIOX_API_KEY: required by stt fallback provider 'soniox'") for p in found)
    assert any(p.startswith("stt.soniox.max_endpoint_delay_ms = 100") for p in found)


def test_a_fallback_that_is_not_a_list_is_refused() -> None:
    (problem,) = problems("dev", **{"tts.fallback": "local"})
    assert problem.startswith("tts.fallback = 'local' (from test): must be a list")


async def test_the_session_gets_livekits_adapters_and_no_second_retry_layer() -> None:
    settings, registry = cloudsim.load_checked("production")
    # no pre-warm: nothing here may reach for the real providers' hosts
    settings = settings.with_overrides({**CHAINS, **FAST, "http.prewarm": False}, "test")
    runtime = make_runtime(settings, registry)
    session, _ = build_session(settings, registry, runtime)
    assert isinstance(session.stt, stt.FallbackAdapter)
    assert isinstance(session.llm, llm.FallbackAdapter)
    assert isinstance(session.tts, tts.FallbackAdapter)
    # the adapters retry each provider MAX_RETRIES times; the session must not retry them again
    conn = session.conn_options
    assert [o.max_retry for o in (conn.stt_conn_options, conn.llm_conn_options, conn.tts_conn_options)] == [
        0
    ] * 3
    assert conn.tts_conn_options.timeout == 1.0  # the TTS adapter's attempts take it from here
    await session.aclose()


# ------------------------------------------------------------------------------ in a session


def write(path: Path, *turns: str) -> scenario.Scenario:
    path.write_text("".join(f'[[turns]]\nsay = "{t}"\npause = 0.2\n' for t in turns))
    return scenario.load(path)


@pytest.mark.realtime
async def test_a_failing_llm_and_a_stalling_tts_hand_the_turn_to_the_next_provider_then_come_back(
    tmp_path: Path,
) -> None:
    sc = write(tmp_path / "two.toml", "thank you very much", "where is my order")
    settings, registry = cloudsim.load_checked("production")
    # probe at once (no restraint), as livekit's adapters alone do: this test is about coming back;
    # tests/test_fault_matrix.py holds the probes to one per interval
    settings = settings.with_overrides({**FAST, **CHAINS, "resilience.probe_initial": 0.0}, "test")
    async with cloudsim.running(settings, registry, sc.recognizer_phrases()) as (cloud, fakes):
        fakes.llm.responder = lambda messages: "The cloud answers."
        fakes.llm.faults.push(*[Fault.http(503)] * 3)  # 5xx after the retries
        fakes.tts.faults.push(*[Fault.slow_first_byte(30.0)] * 3)  # stalls past HTTP_TIMEOUT
        report, _ = await simulate(cloud, registry, sc)

    first, second = report.turns
    # turn 1: both primaries gave up after three attempts, the local providers answered
    assert first.reply_text == "You are welcome. Goodbye!"  # the local reply table
    assert first.tts_ttfb is not None and first.tts_ttfb >= 3 * 1.0  # three 1 s attempts first
    # turn 2: the recovery probes succeeded, the primaries serve again
    assert second.reply_text == "The cloud answers."
    # the emulated ElevenLabs (0.2 s first byte), not espeak in-process (faster); under the 1 s
    # timeout, so no attempt stalled (a bound of 0.5 s left a busy machine 0.3 s of scheduling)
    assert 0.2 <= second.tts_ttfb < FAST["http.timeout"]
    # openai: 3 failed attempts, 1 recovery probe, turn 2; elevenlabs likewise (contexts)
    assert fakes.llm.stats.attempts("/chat/completions") == 5
    assert fakes.tts.stats.events["contexts"] == 5
    assert not report.errors  # the adapter hid the failures from the session


@pytest.mark.realtime
async def test_with_the_stt_down_the_backup_recognizes_and_the_next_session_uses_the_primary(
    tmp_path: Path,
) -> None:
    sc = write(tmp_path / "one.toml", "thank you very much")
    settings, registry = cloudsim.load_checked("production")
    settings = settings.with_overrides({**FAST, "stt.fallback": CHAINS["stt.fallback"]}, "test")
    async with cloudsim.running(settings, registry, sc.recognizer_phrases()) as (cloud, fakes):
        await fakes.stt.stop()  # down: connections refused
        down, _ = await simulate(cloud, registry, sc)
        assert fakes.stt.transcripts == []
        await fakes.stt.start()  # back, on the same port
        back, _ = await simulate(cloud, registry, sc)

    assert down.turns[0].user_text == "thank you very much"  # by the local STT
    assert back.turns[0].user_text == "thank you very much"
    assert fakes.stt.transcripts == ["thank you very much"]  # by Soniox, once back
    assert not down.errors and not back.errors
