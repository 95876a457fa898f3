"""Layering, flat keys, provenance and validation of the configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from handler import config
from handler.registry import Registry, load_checked

pytestmark = pytest.mark.env_matrix  # these tests read the environment nox sets


def load(env: str = "dev") -> config.Settings:
    return config.load(env)


def problems(env: str = "dev") -> list[config.Problem]:
    with pytest.raises(config.ConfigError) as e:
        load_checked(env)
    return e.value.problems


GUIDE_TABLE = {
    # key: (default, dev, fast, stable, production) as the guide and the issues give them (issue 11
    # tuned fast's VAD silence and stable's endpointing and interruption words from `bench`)
    "turn.min_endpointing_delay": (0.5, 0.5, 0.3, 1.5, 0.5),
    "turn.min_interruption_words": (0, 0, 0, 3, 0),
    "turn.interruption_threshold": (0.8, 0.8, 0.8, 0.9, 0.8),
    "turn.interruptions_enabled": (True, True, True, True, True),
    "llm.max_tokens": (500, 500, 300, 500, 500),
    "logging.level": ("INFO", "DEBUG", "WARNING", "INFO", "WARNING"),
    "http.timeout": (15, 15, 15, 15, 15),
    "http.max_connections": (50, 50, 50, 50, 50),
    "retry.max_retries": (2, 2, 2, 2, 2),
    "vad.min_speech_duration": (0.25,) * 5,
    "vad.min_silence_duration": (0.5, 0.5, 0.3, 0.5, 0.5),
}


@pytest.mark.parametrize("env_index,env", list(enumerate(["dev", "fast", "stable", "production"], 1)))
def test_environments_carry_the_guides_values(root: Path, env_index: int, env: str) -> None:
    s = load(env)
    for key, values in GUIDE_TABLE.items():
        assert s.get(key) == values[env_index], key


def test_an_explicit_env_wins_over_env_for_dynaconf(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENV_FOR_DYNACONF", "dev")
    s = load("fast")
    assert (s.env, s.get("turn.min_endpointing_delay"), s.get("logging.level")) == ("fast", 0.3, "WARNING")


def test_unset_env_means_dev(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENV_FOR_DYNACONF", raising=False)
    assert config.load().env == "dev"


def test_every_default_key_has_a_comment() -> None:
    import re

    from conftest import REPO

    for line in (REPO / "settings.toml").read_text().splitlines():
        if re.match(r"^[a-z_]+ = ", line):  # a key (continuation lines of an array are not)
            assert "#" in line.split("=", 1)[1], f"no comment: {line}"


def test_each_layer_wins_over_the_one_below(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "llm.temperature"
    assert load("fast").source(key) == config.DEFAULT_SOURCE
    (root / "environments" / "fast.toml").write_text("[fast.llm]\ntemperature = 0.1\n")
    s = load("fast")
    assert (s.get(key), s.source(key)) == (0.1, f"{root}/environments/fast.toml")
    (root / ".secrets.toml").write_text("[default.llm]\ntemperature = 0.2\n")
    s = load("fast")
    assert (s.get(key), s.source(key)) == (0.2, ".secrets.toml")
    (root / ".env").write_text("HANDLER_LLM__TEMPERATURE=0.3\n")
    s = load("fast")
    assert (s.get(key), s.source(key)) == (0.3, ".env (HANDLER_LLM__TEMPERATURE)")
    monkeypatch.setenv("HANDLER_LLM__TEMPERATURE", "0.4")
    s = load("fast")
    assert (s.get(key), s.source(key)) == (0.4, "environment variable HANDLER_LLM__TEMPERATURE")


@pytest.mark.parametrize(
    "flat,raw,key,value",
    [
        ("MIN_ENDPOINTING_DELAY", "0.7", "turn.min_endpointing_delay", 0.7),
        ("INTERRUPTION_THRESHOLD", "0.95", "turn.interruption_threshold", 0.95),
        ("ENABLE_INTERRUPTIONS", "false", "turn.interruptions_enabled", False),
        ("HTTP_TIMEOUT", "20", "http.timeout", 20),
        ("HTTP_MAX_CONNECTIONS", "10", "http.max_connections", 10),
        ("MAX_RETRIES", "1", "retry.max_retries", 1),
        ("MAX_TOKENS", "120", "llm.max_tokens", 120),
        ("LOG_LEVEL", "ERROR", "logging.level", "ERROR"),
    ],
)
def test_the_guides_flat_keys_work_from_env_and_dotenv(
    root: Path, monkeypatch: pytest.MonkeyPatch, flat: str, raw: str, key: str, value: object
) -> None:
    (root / ".env").write_text(f"{flat}={raw}\n")
    s = load("production")
    assert (s.get(key), s.source(key)) == (value, f".env ({flat})")
    monkeypatch.setenv(flat, raw)
    s = load("production")
    assert (s.get(key), s.source(key)) == (value, f"environment variable {flat}")


def test_flat_and_nested_keys_that_disagree_are_refused(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_TOKENS", "100")
    monkeypatch.setenv("HANDLER_LLM__MAX_TOKENS", "200")
    with pytest.raises(config.ConfigError) as e:
        load()
    assert "HANDLER_LLM__MAX_TOKENS" in str(e.value) and "MAX_TOKENS" in str(e.value)


def test_unknown_environment_is_refused_not_defaulted(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENV_FOR_DYNACONF", "prodution")
    with pytest.raises(config.ConfigError) as e:
        config.load()
    (p,) = e.value.problems
    assert p.value == "prodution" and "did you mean 'production'" in p.message
    assert "environment variable ENV_FOR_DYNACONF" in str(p)


def test_every_problem_is_reported_at_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "environments" / "dev.toml").write_text(
        '[dev.turn]\nmin_endpoint_delay = 0.4\n[dev.llm]\nmax_tokens = -5\nprovider = "openai"\n'
    )
    monkeypatch.setenv("HANDLER_VAD__MIN_SILENCE_DURATION", "'long'")
    monkeypatch.setenv("INTERRUPTION_THRESHOLD", "1.5")
    monkeypatch.setenv("HANDLER_TTS__PROVIDER", "elevenlab")
    found = {p.key: p for p in problems()}
    typo = found["turn.min_endpoint_delay"]
    assert "did you mean 'min_endpointing_delay'" in typo.message
    assert typo.source == f"{root}/environments/dev.toml"
    assert found["llm.max_tokens"].value == -5 and "from 1" in found["llm.max_tokens"].message
    assert found["vad.min_silence_duration"].message == "must be a number"
    assert (
        found["vad.min_silence_duration"].source == "environment variable HANDLER_VAD__MIN_SILENCE_DURATION"
    )
    assert "0.0 to 1.0" in found["turn.interruption_threshold"].message
    assert "available: elevenlabs" in found["tts.provider"].message
    # the cloud providers' keys are missing too, and said how to set
    assert "export OPENAI_API_KEY=" in found["OPENAI_API_KEY"].message


def test_min_endpointing_delay_above_max_is_refused(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIN_ENDPOINTING_DELAY", "4")
    found = {p.key: p for p in problems()}
    assert "must not exceed turn.max_endpointing_delay" in found["turn.min_endpointing_delay"].message


def test_prometheus_port_on_the_health_port_is_refused(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDLER_WORKER__PORT", "9100")
    monkeypatch.setenv("HANDLER_WORKER__PROMETHEUS_PORT", "9100")
    problem = {p.key: p for p in problems()}["worker.prometheus_port"]
    assert problem.value == 9100
    assert "must differ from worker.port" in problem.message
    assert problem.source == "environment variable HANDLER_WORKER__PROMETHEUS_PORT"


@pytest.mark.parametrize("value", ["-1", "1e9", "true"])
def test_absurd_numbers_and_wrong_types_are_refused(
    root: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("HTTP_TIMEOUT", value)
    assert "http.timeout" in {p.key for p in problems()}


def test_unknown_provider_table_keys_get_a_suggestion(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDLER_LLM__OPENAI__MODLE", "gpt-4o")
    found = {p.key: p for p in problems()}
    assert "did you mean 'model'" in found["llm.openai.modle"].message


def test_secrets_are_only_required_for_selected_providers(
    root: Path, planted: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    keys = {p.key for p in problems("production")}
    assert "OPENAI_API_KEY" in keys and "ELEVEN_API_KEY" not in keys
    monkeypatch.delenv("LIVEKIT_URL")
    with pytest.raises(config.ConfigError) as e:
        load_checked("production", for_start=True)
    assert {"OPENAI_API_KEY", "LIVEKIT_URL"} <= {p.key for p in e.value.problems}


def test_secrets_come_from_env_dotenv_or_secrets_file(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / ".secrets.toml").write_text('OPENAI_API_KEY = "from-secrets-file"\n')
    (root / ".env").write_text("ELEVEN_API_KEY=from-dotenv\n")
    s = load()
    assert (
        s.secret("OPENAI_API_KEY") == "from-secrets-file"
        and s.secret_source("OPENAI_API_KEY") == ".secrets.toml"
    )
    assert s.secret("ELEVEN_API_KEY") == "from-dotenv" and s.secret_source("ELEVEN_API_KEY") == ".env"
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    assert load().secret("OPENAI_API_KEY") == "from-env"
    assert "secret" not in str(load().data).lower()


def test_the_current_environment_passes_check_with_keys(root: Path, planted: dict[str, str]) -> None:
    # nox runs this once per environment with ENV_FOR_DYNACONF set
    settings, registry = load_checked(for_start=True)
    assert isinstance(registry, Registry) and settings.env in config.available_envs(root)


def test_settings_load_the_environment_this_run_is_under(
    request: pytest.FixtureRequest, root: Path, planted: dict[str, str]
) -> None:
    # under `--env-matrix` (nox) each run of an env_matrix test has its environment set for it
    params = getattr(request.node, "callspec", None)
    expected = (params and params.params.get("matrix_env")) or os.environ.get("ENV_FOR_DYNACONF", "dev")
    settings, _ = load_checked()  # the environment from ENV_FOR_DYNACONF, as every command reads it
    assert settings.env == expected


def test_bad_toml_names_the_file(root: Path) -> None:
    (root / "environments" / "dev.toml").write_text("[dev.turn\nmin = 1\n")
    with pytest.raises(config.ConfigError) as e:
        load()
    assert "dev.toml" in str(e.value) and "not valid TOML" in str(e.value)


def test_a_higher_layer_replaces_a_list_instead_of_appending_to_it(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (root / "environments" / "fast.toml").write_text('[fast.stt]\nlanguage_hints = ["en"]\n')
    s = load("fast")
    assert (s.get("stt.language_hints"), s.source("stt.language_hints")) == (
        ["en"],
        f"{root}/environments/fast.toml",
    )
    monkeypatch.setenv("HANDLER_STT__LANGUAGE_HINTS", '["de"]')
    assert load("fast").get("stt.language_hints") == ["de"]


def test_loading_twice_still_tells_dotenv_from_the_environment(root: Path) -> None:
    import os

    (root / ".env").write_text("MAX_TOKENS=123\nOPENAI_API_KEY=from-dotenv-0123456789\n")
    load()
    s = load()
    assert (s.get("llm.max_tokens"), s.source("llm.max_tokens")) == (123, ".env (MAX_TOKENS)")
    assert s.secret_source("OPENAI_API_KEY") == ".env"
    # .env is read, not copied into the process environment (child processes would inherit it)
    assert "MAX_TOKENS" not in os.environ and "OPENAI_API_KEY" not in os.environ


def test_an_environment_section_that_is_not_a_table_is_refused(root: Path) -> None:
    (root / ".secrets.toml").write_text("default = 5\n")
    with pytest.raises(config.ConfigError) as e:
        load()
    assert ".secrets.toml [default]" in str(e.value) and "must be a table" in str(e.value)


def test_a_directorys_settings_toml_changes_the_defaults_and_the_environments_apply_over_it(
    root: Path,
) -> None:
    # stable sets no log level, production sets WARNING: a directory's [default] reaches the first
    # only, so a full copy of settings.toml used as a template cannot undo production.toml
    (root / "settings.toml").write_text('[default.logging]\nlevel = "ERROR"\n')
    stable, production = load("stable"), load("production")
    assert (stable.get("logging.level"), stable.source("logging.level")) == (
        "ERROR",
        f"{root}/settings.toml [default]",
    )
    assert (production.get("logging.level"), production.source("logging.level")) == (
        "WARNING",
        "environments/production.toml",
    )


def test_a_root_that_is_not_a_directory_is_refused(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.ROOT_VAR, str(root / "nowhere"))
    with pytest.raises(config.ConfigError) as e:
        load()
    assert "is not a directory" in str(e.value) and config.ROOT_VAR in str(e.value)
