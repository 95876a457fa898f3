"""Installed livekit plugins with no voice-handler code (groq, deepgram, cartesia from the dev extra),
selected, validated and built by configuration alone; groq's LLM holds a conversation against the
local OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from handler import config, livekit_plugins
from handler.fakes import LatencyProfile, OpenAIServer
from handler.pipeline import http
from handler.pipeline.session import make_runtime
from handler.registry import ALLOW_VAR, Registry, load_checked
from handler.sim import cloudsim, scenario

THREE = "livekit-plugins-groq,livekit-plugins-deepgram,livekit-plugins-cartesia"
KEYS = {
    "GROQ_API_KEY": "gsk_planted_groq_0123456789",
    "DEEPGRAM_API_KEY": "planted-deepgram-0123456789",
    "CARTESIA_API_KEY": "planted-cartesia-0123456789",
}


@pytest.fixture
def three(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_VAR, THREE)
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
async def fresh_pool() -> AsyncIterator[None]:
    yield
    await http.close_shared_session()


def select_all_three(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "HANDLER_STT__PROVIDER": "deepgram",
        "HANDLER_STT__DEEPGRAM__MODEL": "nova-3",
        "HANDLER_STT__DEEPGRAM__LANGUAGE": "en-GB",
        "HANDLER_STT__DEEPGRAM__ENDPOINTING_MS": "300",
        "HANDLER_LLM__PROVIDER": "groq",
        "HANDLER_LLM__GROQ__MODEL": "llama-3.1-8b-instant",
        "HANDLER_TTS__PROVIDER": "cartesia",
        "HANDLER_TTS__CARTESIA__MODEL": "sonic-2",
        "HANDLER_TTS__CARTESIA__SPEED": "1.1",
    }.items():
        monkeypatch.setenv(name, value)


# ------------------------------------------------------------------------------ discovery


def test_discovery_finds_the_installed_packages_and_their_stages_and_distributions() -> None:
    found = {f.module: f for f in livekit_plugins.discover()}
    assert found["groq"].stages == ("stt", "llm", "tts")
    assert found["deepgram"].stages == ("stt", "tts")
    assert found["cartesia"].stages == ("stt", "tts")
    assert found["silero"].stages == ("vad",)
    assert found["groq"].distribution == "livekit-plugins-groq"


def test_a_voice_handler_plugin_of_the_same_name_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry.load(allow="livekit-plugins-openai,livekit-plugins-silero,groq")
    assert registry.get("llm", "openai").origin == "built-in"
    assert registry.get("vad", "silero").origin == "built-in"
    assert registry.get("stt", "openai").origin == "livekit-plugins-openai"  # no built-in openai STT
    assert ("llm", "openai", "livekit-plugins-openai") in {
        (p.stage, p.name, p.origin) for p in registry.overridden
    }
    assert registry.get("llm", "groq").livekit_module == "groq"


def test_discovery_imports_no_plugin_and_help_imports_no_livekit(root: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != ALLOW_VAR}  # every installed plugin
    code = (
        "import sys; from handler.registry import Registry; r = Registry.load();"
        "assert 'groq' in r.names('llm') and 'deepgram' in r.names('stt');"
        "print(sorted(m for m in sys.modules if m.startswith('livekit.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    code = (
        # the typer app main() runs (main() itself ends the process with os._exit)
        "import sys; from handler.cli import app\n"
        "try: app(['--help'])\n"
        "except SystemExit: pass\n"
        "print('LOADED', [m for m in sys.modules if m.startswith('livekit')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "LOADED []" in out.stdout, out.stderr


def test_plugins_list_shows_them_and_their_distribution(root: Path, cli) -> None:
    out = cli("plugins", "list", "--json", env={ALLOW_VAR: THREE, "HANDLER_LLM__PROVIDER": "groq"})
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert {"name": "groq", "origin": "livekit-plugins-groq", "selected": True} in doc["stages"]["llm"][
        "providers"
    ]
    assert {"name": "deepgram", "origin": "livekit-plugins-deepgram", "selected": False} in doc["stages"][
        "stt"
    ]["providers"]
    assert {"name": "livekit.plugins.cartesia", "origin": "livekit-plugins-cartesia"} in doc["plugins"]
    text = cli("plugins", "list", env={ALLOW_VAR: THREE, "HANDLER_LLM__PROVIDER": "groq"}).stdout
    assert "* groq           livekit-plugins-groq" in text


# ------------------------------------------------------------------------------ by configuration alone


async def test_each_is_selected_validated_and_built_from_config_with_keys_from_dotenv(
    root: Path, three: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    select_all_three(monkeypatch)
    # keys from .env reach the constructors as api_key= (not through os.environ, which stays clean)
    (root / ".env").write_text("".join(f"{k}={v}\n" for k, v in KEYS.items()))
    settings, registry = load_checked("production")
    runtime = make_runtime(settings, registry)
    stt = registry.build("stt", settings, runtime)
    llm = registry.build("llm", settings, runtime)
    tts = registry.build("tts", settings, runtime)
    assert type(stt).__module__.startswith("livekit.plugins.deepgram")
    assert stt._opts.model == "nova-3" and stt._opts.language == "en-GB" and stt._opts.endpointing_ms == 300
    assert stt._api_key == KEYS["DEEPGRAM_API_KEY"]
    assert stt._session is runtime.http_session  # the shared pool
    assert type(llm).__module__.startswith("livekit.plugins.groq")
    assert llm.model == "llama-3.1-8b-instant"
    assert llm._client.api_key == KEYS["GROQ_API_KEY"] and llm._client.max_retries == 0
    # the stage's shared keys go where the constructor has them
    assert llm._opts.temperature == settings.get("llm.temperature")
    assert llm._opts.max_completion_tokens == settings.get("llm.max_tokens")
    assert type(tts).__module__.startswith("livekit.plugins.cartesia")
    assert tts._opts.model == "sonic-2" and tts._opts.speed == 1.1
    assert tts._opts.api_key == KEYS["CARTESIA_API_KEY"] and tts._session is runtime.http_session
    assert set(KEYS.values()) <= set(settings.secret_values())  # redacted from logs
    assert registry.endpoints(settings)[:1] == ["https://api.deepgram.com/v1/listen"]


async def test_a_fallback_chain_can_mix_them_with_the_built_ins(
    root: Path, three: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from livekit.agents import llm

    from handler.resilience import fallback

    monkeypatch.setenv("HANDLER_LLM__PROVIDER", "groq")
    monkeypatch.setenv("HANDLER_LLM__FALLBACK", '["groq", "local"]')
    monkeypatch.setenv("GROQ_API_KEY", KEYS["GROQ_API_KEY"])
    settings, registry = load_checked("dev")
    runtime = make_runtime(settings, registry)
    adapter = fallback.build_stage("llm", settings, registry, runtime)
    assert isinstance(adapter, llm.FallbackAdapter)
    assert [type(x).__module__.split(".")[2] for x in adapter._llm_instances] == ["groq", "scripted_llm"]


def test_mistakes_are_refused_with_the_usual_message(
    root: Path, three: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    select_all_three(monkeypatch)
    monkeypatch.setenv("HANDLER_LLM__GROQ__MODLE", "x")
    monkeypatch.setenv("HANDLER_LLM__GROQ__TEMPERATURE", '"hot"')
    monkeypatch.setenv("HANDLER_LLM__GROQ__BASE_URL", "notaurl")
    monkeypatch.setenv("HANDLER_STT__DEEPGRAM__PUNCTUATE", '"yes"')
    monkeypatch.setenv("HANDLER_TTS__CARTESIA__API_KEY", "sk-pasted-into-settings")
    monkeypatch.setenv("HANDLER_TTS__CARTESIA__ENCODING", '"mp3"')
    monkeypatch.setenv("DEEPGRAM_API_KEY", KEYS["DEEPGRAM_API_KEY"])
    with pytest.raises(config.ConfigError) as e:
        load_checked("production")
    lines = e.value.lines()
    text = "\n".join(lines)
    assert (
        "llm.groq.modle = 'x' (from environment variable HANDLER_LLM__GROQ__MODLE): unknown option of "
        "livekit.plugins.groq.LLM; did you mean 'model'?; accepted: base_url, max_completion_tokens" in text
    )
    assert "llm.groq.temperature = 'hot'" in text and "must be a number" in text
    assert "llm.groq.base_url = 'notaurl'" in text and "must be a URL" in text
    assert "stt.deepgram.punctuate = 'yes'" in text and "must be true or false" in text
    assert "tts.cartesia.api_key" in text and "secrets never go in settings" in text
    assert "sk-pasted-into-settings" not in text
    assert any(line.startswith("GROQ_API_KEY: required by llm provider 'groq'") for line in lines)
    assert any(line.startswith("CARTESIA_API_KEY: required by tts provider 'cartesia'") for line in lines)
    assert not any(line.startswith("DEEPGRAM_API_KEY") for line in lines)  # it is set


def test_a_literal_typed_option_lists_its_choices() -> None:
    problems = livekit_plugins.table_problems("cartesia", "tts", {"encoding": "mp3"})
    (key, message), *_ = problems
    assert key == "encoding" and message.startswith("must be one of 'pcm_s16le'")


def test_a_url_option_of_a_built_in_is_checked(root: Path, planted: dict[str, str], cli) -> None:
    out = cli("config", "check", "--env", "production", env={"HANDLER_LLM__OPENAI__BASE_URL": "notaurl"})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert (
        "llm.openai.base_url = 'notaurl' (from environment variable HANDLER_LLM__OPENAI__BASE_URL): "
        "must be a URL" in out.stderr
    )
    ok = cli(
        "config",
        "check",
        "--env",
        "production",
        env={"HANDLER_LLM__OPENAI__BASE_URL": "http://127.0.0.1:8/v1"},
    )
    assert ok.returncode == 0, ok.stderr


def test_the_config_can_name_the_key_variable_and_check_says_how_to_set_it(root: Path, cli) -> None:
    env = {
        ALLOW_VAR: "groq",
        "HANDLER_LLM__PROVIDER": "groq",
        "HANDLER_LLM__GROQ__API_KEY_ENV": "MY_GROQ_KEY",
    }
    out = cli("config", "check", "--env", "dev", env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert (
        "MY_GROQ_KEY: required by llm provider 'groq'; set it in the environment, .env or .secrets.toml "
        "(export MY_GROQ_KEY=...)" in out.stderr
    )
    assert "GROQ_API_KEY" not in out.stderr
    secret = "gsk_named-by-config-0123456789"
    ok = cli("config", "check", "--env", "dev", env={**env, "MY_GROQ_KEY": secret})
    assert ok.returncode == 0 and secret not in ok.stdout + ok.stderr
    shown = cli(
        "config", "show", "--json", env={**env, "MY_GROQ_KEY": secret, "HANDLER_LLM__GROQ__USER": secret}
    )
    assert secret not in shown.stdout and "***" in shown.stdout


# ------------------------------------------------------------------------------ a whole conversation


async def test_groq_llm_streams_a_reply_from_the_openai_compatible_server(
    root: Path, three: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from livekit.agents import llm as lk_llm

    monkeypatch.setenv("GROQ_API_KEY", KEYS["GROQ_API_KEY"])
    monkeypatch.setenv("HANDLER_LLM__PROVIDER", "groq")
    settings, registry = load_checked("dev")
    async with OpenAIServer(profile=LatencyProfile(first_byte=0.05, tokens_per_second=200.0)) as server:
        cloud = settings.with_overrides({"llm.groq.base_url": server.base_url}, "test")
        model = registry.build("llm", cloud, make_runtime(cloud, registry))
        chat = lk_llm.ChatContext()
        chat.add_message(role="user", content="where is my order")
        text = ""
        async with model.chat(chat_ctx=chat) as stream:
            async for chunk in stream:
                if chunk.delta and chunk.delta.content:
                    text += chunk.delta.content
        await model.aclose()
    assert text == "You said: where is my order."
    assert server.stats.attempts("/chat/completions") == 1


@pytest.mark.realtime
async def test_a_simulated_conversation_runs_on_groq_by_configuration_alone(
    tmp_path: Path, three: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handler.sim.runner import simulate

    said = ["where is my order", "thank you very much"]
    path = tmp_path / "two.toml"
    path.write_text("".join(f'[[turns]]\nsay = "{s}"\npause = 0.2\n' for s in said))
    sc = scenario.load(path)
    monkeypatch.setenv("GROQ_API_KEY", KEYS["GROQ_API_KEY"])
    monkeypatch.setenv("HANDLER_LLM__PROVIDER", "groq")
    settings, registry = load_checked("dev")
    respond = cloudsim.responder(settings, registry)  # the local LLM's reply table, served as groq
    async with OpenAIServer(responder=respond, profile=cloudsim.PROFILES["llm"]) as server:
        cloud = settings.with_overrides({"llm.groq.base_url": server.base_url}, "test")
        report, _ = await simulate(cloud, registry, sc)
    assert report.providers["llm"] == "groq"
    assert [t.reply_text for t in report.turns] == [
        "Your order shipped yesterday and arrives tomorrow.",
        "You are welcome. Goodbye!",
    ]
    assert not report.errors
    for turn in report.turns:
        assert turn.llm_ttft is not None and turn.llm_ttft >= cloudsim.PROFILES["llm"].first_byte
    assert server.stats.attempts("/chat/completions") == 2
