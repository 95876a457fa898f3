"""`simulate --cloud-fakes`: the production stack (soniox, openai, elevenlabs plugins, unmodified)
end to end over the local provider servers, and pre-warm with one reused connection per provider."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from handler.pipeline import http
from handler.pipeline.session import build_session, make_runtime, start_prewarm
from handler.sim import cloudsim, scenario, simulate

LATENCY_FIELDS = ("ttfa", "ttfa_played", "end_of_turn_delay", "transcription_delay", "llm_ttft", "tts_ttfb")
KEYS = ("OPENAI_API_KEY", "ELEVEN_API_KEY", "SONIOX_API_KEY")
SCHEDULING = 1.5
"""Seconds a loaded machine may add to an emulated latency measured in a conversation."""


@pytest.fixture(autouse=True)
async def fresh_pool() -> AsyncIterator[None]:
    yield
    await http.close_shared_session()


# ------------------------------------------------------------------------------ configuration


def test_every_stage_runs_its_cloud_provider_whatever_the_environment_selects() -> None:
    dev, _ = cloudsim.load_checked("dev")
    assert [dev.get(f"{s}.provider") for s in ("stt", "llm", "tts")] == ["soniox", "openai", "elevenlabs"]
    assert dev.source("llm.provider") == "--cloud-fakes"
    assert dev.get("logging.level") == "DEBUG"  # dev's other settings still apply
    production, _ = cloudsim.load_checked("production")
    assert production.source("llm.provider") != "--cloud-fakes"  # already the cloud stack


def test_a_fallback_chain_is_kept_or_gets_the_cloud_provider_in_front() -> None:
    settings, _ = cloudsim.load_checked("dev")
    chained = settings.with_overrides({"stt.provider": "local", "stt.fallback": ["local"]}, "test")
    assert cloudsim.cloud_overrides(chained) == {
        "stt.provider": "soniox",
        "stt.fallback": ["soniox", "local"],
    }
    kept = settings.with_overrides({"tts.fallback": ["elevenlabs", "local"]}, "test")
    assert "tts.fallback" not in cloudsim.cloud_overrides(kept)


def test_dummy_keys_stand_in_for_absent_ones_only_while_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-0123456789")
    settings, _ = cloudsim.load_checked("production")
    assert settings.secret("OPENAI_API_KEY") == "sk-real-0123456789"  # a real key is kept
    assert settings.secret("ELEVEN_API_KEY") == settings.secret("SONIOX_API_KEY") == cloudsim.DUMMY_KEY
    assert [k for k in KEYS if k in os.environ] == ["OPENAI_API_KEY"]  # nothing planted stays


def test_the_fakes_cannot_be_combined_with_the_offline_stack(cli) -> None:
    out = cli("simulate", "--offline", "--cloud-fakes")
    assert out.returncode == 2 and "exclude each other" in out.stderr and "Traceback" not in out.stderr


# ------------------------------------------------------------------------------ pre-warm


@pytest.mark.parametrize("on", [True, False], ids=["on", "off"])
async def test_prewarm_opens_each_providers_connection_before_the_first_request_or_none(on: bool) -> None:
    settings, registry = cloudsim.load_checked("production")
    async with cloudsim.running(settings.with_overrides({"http.prewarm": on}, "test"), registry) as (
        cloud,
        fakes,
    ):
        runtime = make_runtime(cloud, registry)
        warming = start_prewarm(cloud, registry, runtime)  # what the worker's entrypoint does
        session, _ = build_session(cloud, registry, runtime)  # AgentSession: LLM.prewarm()
        if warming is not None:
            await warming
        session.tts.prewarm()  # what the agent's activity does when the session starts
        await asyncio.sleep(cloudsim.CONNECT + 0.3)
        seen = {
            s: dict(srv.stats.paths)
            for s, srv in (("stt", fakes.stt), ("llm", fakes.llm), ("tts", fakes.tts))
        }
        await session.aclose()
        await session.tts.aclose()
        await session.llm.aclose()

    if not on:
        assert seen == {"stt": {}, "llm": {}, "tts": {}}
        return
    # aiohttp providers: their host (HEAD /); the ElevenLabs websocket then reuses that connection
    assert seen["stt"] == {"/": 1} and seen["tts"]["/"] == 1
    assert fakes.tts.stats.ws_sessions == 1 and fakes.tts.stats.connections == 1
    # OpenAI: its own pool, warmed by the SDK's GET /models; no useless HEAD on the aiohttp pool
    assert seen["llm"] == {"/v1/models": 1}


# ------------------------------------------------------------------------------ whole conversations


@pytest.mark.realtime
async def test_the_cloud_stack_recognizes_answers_and_reuses_one_connection_per_provider(
    tmp_path: Path,
) -> None:
    said = ["thank you very much", "where is my order", "thank you very much"]
    path = tmp_path / "three.toml"
    path.write_text("".join(f'[[turns]]\nsay = "{s}"\npause = 0.2\n' for s in said))
    sc = scenario.load(path)
    settings, registry = cloudsim.load_checked("production")
    async with cloudsim.running(settings, registry, sc.recognizer_phrases()) as (cloud, fakes):
        report, _ = await simulate(cloud, registry, sc)

    assert report.providers == {
        "vad": "silero",
        "stt": "soniox",
        "llm": "openai",
        "tts": "elevenlabs",
        "turn": "vad",
    }
    assert [t.user_text for t in report.turns] == said  # recognized from the audio Soniox received
    assert [t.reply_text for t in report.turns] == [
        "You are welcome. Goodbye!",
        "Your order shipped yesterday and arrives tomorrow.",
        "You are welcome. Goodbye!",
    ]
    llm, tts, stt = (cloudsim.PROFILES[s] for s in ("llm", "tts", "stt"))
    for turn in report.turns:
        assert all(getattr(turn, f) is not None for f in LATENCY_FIELDS), turn
        # the emulated service latency; the slack is a busy machine's scheduling (whether a turn
        # paid a new connection is asserted below from the servers, not from timing: a bound of
        # first_byte + CONNECT left 0.3 s for scheduling, six times a run)
        assert llm.first_byte <= turn.llm_ttft < llm.first_byte + SCHEDULING, turn
        assert tts.first_byte <= turn.tts_ttfb < tts.first_byte + SCHEDULING, turn
        assert turn.transcription_delay >= stt.final_delay
    assert not report.errors
    # no turn (the first included) paid a new connection: the pre-warm request opened each one
    assert [fakes.stt.stats.connect_paid, fakes.llm.stats.connect_paid, fakes.tts.stats.connect_paid] == [
        ["/"],
        ["/v1/models"],
        ["/"],
    ]
    # one connection per provider for the whole session: pre-warmed, then reused by every turn
    assert [fakes.stt.stats.connections, fakes.llm.stats.connections, fakes.tts.stats.connections] == [
        1,
        1,
        1,
    ]
    assert fakes.llm.stats.attempts("/chat/completions") == 3 and fakes.llm.stats.attempts("/models") == 1
    assert fakes.stt.stats.ws_sessions == 1 and fakes.stt.stats.events["utterances"] == 3
    # livekit flushed the stream at each VAD end of speech, and the provider asked Soniox to finalize
    assert fakes.stt.stats.events["finalizes"] >= 3
    assert fakes.tts.stats.ws_sessions == 1 and fakes.tts.stats.events["contexts"] == 3


@pytest.mark.realtime
def test_the_command_runs_the_cloud_stack_of_dev_with_no_keys(tmp_path: Path, cli) -> None:
    path = tmp_path / "one.toml"
    path.write_text('[[turns]]\nsay = "where is my order"\n')
    out = cli("simulate", str(path), "--env", "dev", "--cloud-fakes", "-v")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "stt=soniox llm=openai tts=elevenlabs" in out.stdout
    assert "'where is my order' -> 'where is my order' -> 'Your order shipped" in out.stdout
    assert "cloud fakes: soniox ws://127.0.0.1:" in out.stderr and "LLM first token 400 ms" in out.stderr
    assert cloudsim.DUMMY_KEY not in out.stdout + out.stderr  # redacted from dev's DEBUG logs too
