"""Secrets and personal data never leave in clear: planted keys in every place a user may put one
(a setting, `.secrets.toml` below the top level, a name outside the known list, a URL), checked in
every output (`config show`, `config check`, `plugins list`, log lines at DEBUG); tokens in logs;
room names and transcripts in logs and spans; OTLP credentials."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from handler import config, redaction
from handler.observe import logcontext, telemetry
from handler.pipeline.session import configure_logging
from handler.registry import Registry, load_checked

PASTED = "sk-pasted-into-a-setting-9f8e7d6c5b4a"
AZURE = "azure-speech-key-from-secrets-file-31337"
NESTED = "sk-nested-in-secrets-table-424242abcdef"
PASSWORD = "hunter2-db-password-777"
OPAQUE = "opaque-value-from-secrets-file-5150"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJwbGFudGVkLWxrLWtleSIsInN1YiI6ImNhbGxlciJ9"
    ".c2lnbmF0dXJlLW9mLXRoZS1wbGFudGVkLXRva2Vu"
)


def _secrets_file(root: Path) -> None:
    (root / ".secrets.toml").write_text(
        f'AZURE_SPEECH_KEY = "{AZURE}"\n'
        "[default.llm.openai]\n"
        f'api_key = "{NESTED}"\n'
        "[default.llm]\n"
        f'db_password = "{PASSWORD}"\n'  # an unknown key: reported, its value never shown
        f'instructions = "{OPAQUE}"\n'  # not secret by its name, but it came from .secrets.toml
    )


def _outputs(cli, env: dict[str, str]) -> list:
    return [
        cli("config", "show", env=env),
        cli("config", "show", "--json", env=env),
        cli("config", "check", env=env),
        cli("config", "check", "--env", "production", "--start", env=env),
        cli("plugins", "list", env=env),
    ]


def test_secrets_in_settings_secrets_file_tables_and_urls_never_show(root: Path, cli) -> None:
    _secrets_file(root)
    env = {
        "HANDLER_LLM__OPENAI__API_KEY": PASTED,  # a key pasted into a setting: not a known value
        "HANDLER_TELEMETRY__ENDPOINT": f"https://user:{PASSWORD}@collector.example:4318",
        "LOG_LEVEL": "DEBUG",
    }
    runs = _outputs(cli, env)
    for run in runs:
        assert "Traceback" not in run.stderr, run.stderr
        for s in (PASTED, AZURE, NESTED, PASSWORD, OPAQUE):
            assert s not in run.stdout + run.stderr, (run.args, s)
    check = runs[2]
    assert check.returncode == 2
    # the problems are still named, with the value redacted
    assert "llm.db_password = '***' (from .secrets.toml)" in check.stderr
    assert "telemetry.endpoint = 'https://***@collector.example:4318'" in check.stderr
    shown = json.loads(runs[1].stdout)["settings"]
    assert shown["llm.instructions"] == {"value": "***", "source": ".secrets.toml"}


def test_a_key_in_a_setting_file_is_refused_without_showing_it(root: Path, planted, cli) -> None:
    (root / "settings.toml").write_text(f'[default.llm.openai]\napi_key = "{PASTED}"\n')
    out = cli("config", "check", "--env", "production")
    assert out.returncode == 2 and PASTED not in out.stdout + out.stderr
    assert "llm.openai.api_key = '***'" in out.stderr and "never goes in a settings file" in out.stderr


def test_a_providers_key_in_its_secrets_table_is_taken_as_its_key(root: Path, planted, monkeypatch) -> None:
    """Dynaconf's convention: `[default.llm.openai] api_key` in .secrets.toml."""
    monkeypatch.delenv("OPENAI_API_KEY")
    (root / ".secrets.toml").write_text(f'[default.llm.openai]\napi_key = "{NESTED}"\n')
    settings, registry = load_checked("production")
    assert settings.secret("OPENAI_API_KEY") == NESTED
    assert "api_key" not in registry.options(settings, "llm", "openai")
    assert NESTED in settings.secret_values()


def test_log_lines_at_debug_redact_every_planted_secret_and_token(
    root: Path, planted, capsys: pytest.CaptureFixture[str]
) -> None:
    _secrets_file(root)
    for fmt in ("text", "json"):
        settings = config.load("dev").with_overrides(
            {"logging.format": fmt, "telemetry.endpoint": f"https://u:{PASSWORD}@otel.example"}, "test"
        )
        configure_logging(settings, Registry.load())
        for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
            logging.getLogger("livekit").log(
                level, "refused token %s for %s", JWT, f"postgresql://app:{PASSWORD}@db/calls"
            )
            logging.getLogger("handler").log(level, "keys", extra={"k": [AZURE, NESTED, OPAQUE]})
        err = capsys.readouterr().err
        assert err.count("refused token ***") == 4, err
        for s in (JWT, AZURE, NESTED, PASSWORD, OPAQUE, *[v for v in planted.values() if "://" not in v]):
            assert s not in err, (fmt, s)


def test_transcripts_stay_out_of_logs_unless_content_capture_is_on(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    said = "my card number is 4111 1111 1111 1111"
    for capture in (False, True):
        settings = config.load("dev").with_overrides({"telemetry.capture_content": capture}, "test")
        configure_logging(settings, Registry.load())
        logging.getLogger("livekit.agents").debug(
            "received user transcript", extra={"lk.pii.user_transcript": said, "language": "en"}
        )
        err = capsys.readouterr().err
        assert "received user transcript" in err and "language=en" in err
        assert (said in err) is capture


def _job(room: str) -> SimpleNamespace:
    return SimpleNamespace(id="AJ_1", room=SimpleNamespace(name=room))


def test_room_names_are_hashed_unless_the_operator_opts_in(root: Path, planted) -> None:
    room = "sip-+15551234567"
    settings = config.load("production")
    ids = logcontext.job_ids(_job(room), settings)
    assert ids["job"] == "AJ_1" and room not in ids["room"] and "5551234567" not in ids["room"]
    assert ids == logcontext.job_ids(_job(room), settings)  # stable: lines of one call still join
    assert ids["room"] != logcontext.job_ids(_job("sip-+15551234568"), settings)["room"]
    # keyed with the deployment's LiveKit secret: not a plain hash anyone can recompute
    assert ids["room"] != redaction.pseudonym(room)
    clear = settings.with_overrides({"logging.identities": "clear"}, "test")
    assert logcontext.job_ids(_job(room), clear)["room"] == room


def test_identities_setting_is_checked(root: Path, cli) -> None:
    out = cli("config", "check", env={"HANDLER_LOGGING__IDENTITIES": "plain"})
    assert out.returncode == 2 and "logging.identities = 'plain'" in out.stderr and "'hashed'" in out.stderr


def test_a_room_or_caller_named_by_livekit_is_concealed_in_every_log_line(
    root: Path, planted, capsys: pytest.CaptureFixture[str]
) -> None:
    """livekit names the room and the participant in its own messages and `extra` fields
    ("received job request" room=..., "closing agent session" participant=...) and tracebacks:
    once a job has its ids, every line of the process conceals them."""
    settings = config.load("stable")  # INFO: livekit's job lines show
    configure_logging(settings, Registry.load())
    # the worker process hears of a room first from livekit's job request, in a field
    logging.getLogger("livekit.agents").info("received job request", extra={"room": "sip-+15550001111"})
    assert "5550001111" not in capsys.readouterr().err
    room, caller = "sip-+15557654321", "sip_+15557654321"
    ids = logcontext.job_ids(_job(room), settings)
    who = redaction.participant_id(caller, settings)
    log = logging.getLogger("livekit.agents")
    log.info("received job request", extra={"room": room, "room_id": "RM_1"})
    log.info("closing agent session for %s in %s", caller, room, extra={"participant": caller})
    try:
        raise RuntimeError(f"room {room} is gone")
    except RuntimeError:
        log.exception("failed")
    err = capsys.readouterr().err
    assert "5557654321" not in err
    assert f"room={ids['room']}" in err and f"closing agent session for {who} in {ids['room']}" in err
    assert f"RuntimeError: room {ids['room']} is gone" in err


def test_spans_carry_the_hashed_room(root: Path, planted) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    settings = config.load("production")
    processor = telemetry._IdsProcessor(settings)
    provider = TracerProvider()
    provider.add_span_processor(processor)  # type: ignore[arg-type]
    ids = logcontext.job_ids(_job("sip-+15551234567"), settings)
    with logcontext.bound(**ids), provider.get_tracer("t").start_as_current_span("turn") as span:
        room = span.attributes["voice_handler.room"]
    assert "5551234567" not in room and room.startswith("h-")


def test_start_under_dev_warns_loudly_that_it_logs_what_callers_say(root: Path, cli) -> None:
    out = cli("start", env={"ENV_FOR_DYNACONF": ""})
    assert out.returncode == 2  # no LiveKit credentials: it stops before any call
    assert "WARNING: `start` under environment dev (ENV_FOR_DYNACONF is unset" in out.stderr
    assert "personal data" in out.stderr
    quiet = cli("start", env={"ENV_FOR_DYNACONF": "production"})
    assert quiet.returncode == 2 and "personal data" not in quiet.stderr


@pytest.mark.parametrize(
    ("endpoint", "headers", "message"),
    [
        ("http://collector.example:4318", "OTEL_EXPORTER_OTLP_HEADERS", "must be https://"),
        ("https://user:pw-in-url-1234@collector.example:4318", "", "must not carry a user or password"),
    ],
)
def test_otlp_credentials_never_travel_in_clear(
    root: Path, cli, endpoint: str, headers: str, message: str
) -> None:
    env = {
        "HANDLER_TELEMETRY__ENDPOINT": endpoint,
        "HANDLER_TELEMETRY__HEADERS_ENV": headers,
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer planted-otlp-token-0123456789",
    }
    out = cli("config", "check", env=env)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "pw-in-url-1234" not in out.stderr and "planted-otlp-token" not in out.stderr


def test_otlp_over_http_is_fine_on_this_machine(root: Path, cli) -> None:
    env = {
        "HANDLER_TELEMETRY__ENDPOINT": "http://127.0.0.1:4318",
        "HANDLER_TELEMETRY__HEADERS_ENV": "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer planted-otlp-token-0123456789",
    }
    out = cli("config", "check", env=env)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://app:pw-1@db:5432/calls", "postgresql://***@db:5432/calls"),
        ("https://hooks.example/in?token=tok-1&x=2", "https://hooks.example/in?token=***&x=2"),
        ("wss://h/rtc?access_token=eyJ&auto=1", "wss://h/rtc?access_token=***&auto=1"),
        (
            "https://b.s3/x?X-Amz-Signature=abc&X-Amz-Date=1",
            "https://b.s3/x?X-Amz-Signature=***&X-Amz-Date=1",
        ),
        ("https://api.example/v1?model=gpt&page=2", "https://api.example/v1?model=gpt&page=2"),
    ],
)
def test_credentials_in_a_url_are_redacted_wherever_it_is_printed(text: str, shown: str) -> None:
    assert redaction.redact(f"connecting to {text} now", []) == f"connecting to {shown} now"


@pytest.mark.parametrize(
    ("path", "secret"),
    [
        ("llm.openai.api_key", True),
        ("stt.azure.speech_key", True),
        ("llm.groq.extra_headers.x-api-key", True),
        ("records.postgres.password", True),
        ("llm.x.client_secret", True),
        ("llm.max_tokens", False),
        ("llm.local.tokens_per_second", False),
        ("http.keepalive_timeout", False),
        ("llm.groq.api_key_env", False),
        ("telemetry.headers_env", False),
    ],
)
def test_a_setting_is_secret_by_its_name(path: str, secret: bool) -> None:
    assert redaction.is_secret_key(path) is secret


def test_no_shipped_setting_is_taken_for_a_secret(root: Path) -> None:
    settings = config.load("dev")
    assert [p for p, _ in config._walk(settings.data) if redaction.is_secret_key(p)] == []


def test_simulate_and_call_reports_redact_exception_text(
    root: Path, planted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An error quoted from an exception (a provider's 401 body, a refused token) reaches the
    table, the JSON and report.json redacted."""
    from handler.cli.conversation import write_report
    from handler.sim import Report

    settings = config.load("production")
    error = f"llm: APIStatusError: 401 invalid key {planted['OPENAI_API_KEY']} token {JWT}"
    report = Report("qa", "production", {}, [], 1.0, [error], {}, {})
    clock = SimpleNamespace(user=b"\0\0" * 160, agent=b"\0\0" * 160)
    for as_json in (False, True):
        write_report(report, clock, as_json, tmp_path, settings.secret_values())
        out = capsys.readouterr().out + (tmp_path / "report.json").read_text()
        assert "401 invalid key ***" in out
        assert planted["OPENAI_API_KEY"] not in out and JWT not in out
