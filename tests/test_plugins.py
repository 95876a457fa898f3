"""Plugins arrive through the `voice_handler` entry-point group, built-in and third-party alike."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from handler import config
from handler.pipeline.runtime import Runtime
from handler.registry import ALLOW_VAR, PluginLoadError, Registry, load_checked

pytestmark = pytest.mark.env_matrix  # these tests read the environment nox sets

ACME = '''
"""A third-party plugin nobody in voice-handler wrote: an STT named `acme`."""
from handler.hookspecs import hookimpl
from livekit.agents import stt, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS


class AcmeSTT(stt.STT):
    def __init__(self, greeting):
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.greeting = greeting

    async def _recognize_impl(self, buffer, *, language=None, conn_options=DEFAULT_API_CONNECT_OPTIONS):
        return stt.SpeechEvent(type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                               alternatives=[stt.SpeechData(language="en", text=self.greeting)])


@hookimpl
def register_providers(register):
    register("stt", "acme", lambda options, runtime: AcmeSTT(options["greeting"]),
             options={"greeting": "hello from acme"})
'''


@pytest.fixture
def acme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install `acme-voice` the way pip leaves a package: a module plus a .dist-info directory
    declaring the entry point (no pip run, nothing left behind)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "acme_voice.py").write_text(textwrap.dedent(ACME))
    info = site / "acme_voice-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-voice\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[voice_handler]\nacme = acme_voice\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.delenv(ALLOW_VAR)
    yield site
    sys.modules.pop("acme_voice", None)


def test_built_ins_come_through_the_entry_point_group() -> None:
    registry = Registry.load()
    builtins = {(p.stage, p.name) for p in registry.providers() if p.origin == "built-in"}
    assert builtins >= {
        ("vad", "silero"),
        ("stt", "soniox"),
        ("llm", "openai"),
        ("tts", "elevenlabs"),
        ("logging", "default"),
        ("retry", "default"),
    }


def test_built_in_provider_options_are_all_in_settings_toml(root: Path) -> None:
    settings = config.load()
    for p in Registry.load().providers():
        if p.origin == "built-in" and p.options is None:
            assert p.name in settings.defaults[p.stage] or p.stage in ("logging", "retry"), p


def test_a_third_party_stt_is_selectable_by_config_alone(
    acme: Path, root: Path, planted: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDLER_STT__PROVIDER", "acme")
    monkeypatch.setenv("HANDLER_STT__ACME__GREETING", "hi there")
    settings, registry = load_checked("production")
    provider = registry.get("stt", "acme")
    assert provider.origin == "acme-voice"
    built = registry.build("stt", settings, Runtime(settings, None, None))
    assert type(built).__name__ == "AcmeSTT" and built.greeting == "hi there"


def test_plugins_list_shows_the_third_party_plugin_and_its_distribution(acme: Path, root: Path, cli) -> None:
    out = cli("plugins", "list", "--json", env={"HANDLER_STT__PROVIDER": "acme"})
    assert out.returncode == 0, out.stderr
    stt = json.loads(out.stdout)["stages"]["stt"]
    assert stt["selected"] == "acme"
    assert {"name": "acme", "origin": "acme-voice", "selected": True} in stt["providers"]
    assert {"name": "soniox", "origin": "built-in", "selected": False} in stt["providers"]


def test_the_allowlist_keeps_other_plugins_out(
    acme: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "acme" in Registry.load(allow="acme-voice").names("stt")
    assert "acme" not in Registry.load(allow="someone-else").names("stt")
    assert "acme" not in Registry.load(allow="").names("stt")
    monkeypatch.setenv("HANDLER_STT__PROVIDER", "acme")
    monkeypatch.setenv(ALLOW_VAR, "someone-else")
    with pytest.raises(config.ConfigError) as e:
        load_checked()
    assert "unknown stt provider; available: local, soniox" in str(e.value)


def test_a_third_party_option_of_the_wrong_type_is_refused(
    acme: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDLER_STT__PROVIDER", "acme")
    monkeypatch.setenv("HANDLER_STT__ACME__GREETING", "42")
    with pytest.raises(config.ConfigError) as e:
        load_checked()
    assert "stt.acme.greeting = 42" in str(e.value) and "must be a string" in str(e.value)


def test_a_plugin_registering_a_name_first_overrides_the_built_in(root: Path) -> None:
    from handler.hookspecs import hookimpl

    class Override:
        @hookimpl
        def register_providers(self, register):
            register("retry", "default", lambda options, runtime: "overridden")

    registry = Registry.load()
    registry.add(Override(), name="override", origin="test")
    registry.collect()
    assert registry.get("retry", "default").origin == "test"
    assert [(p.stage, p.name, p.origin) for p in registry.overridden] == [("retry", "default", "built-in")]


def test_a_hookimpl_that_matches_no_spec_is_an_error() -> None:
    from handler.hookspecs import hookimpl

    class Typo:
        @hookimpl
        def register_provider(self, register):  # missing "s"
            pass

    registry = Registry.load()
    registry.add(Typo(), name="typo", origin="test")
    with pytest.raises(Exception, match="register_provider"):
        registry.collect()


def test_an_unknown_stage_is_refused_naming_the_plugin() -> None:
    from handler.hookspecs import hookimpl

    class Bad:
        @hookimpl
        def register_providers(self, register):
            register("asr", "x", lambda o, r: None)

    registry = Registry.load()
    registry.add(Bad(), name="bad", origin="bad-dist")
    with pytest.raises(PluginLoadError, match="'bad' .*unknown stage 'asr'"):
        registry.collect()


def test_every_hook_is_documented() -> None:
    from handler import hookspecs

    for name in dir(hookspecs.Specs):
        if not name.startswith("_"):
            assert (getattr(hookspecs.Specs, name).__doc__ or "").strip(), name
