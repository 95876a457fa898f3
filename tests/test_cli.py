"""The command line as a user meets it: exit statuses, messages, machine-readable output, secrets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from handler import config
from handler.pipeline.session import configure_logging
from handler.registry import Registry

pytestmark = pytest.mark.env_matrix  # these tests read the environment nox sets


def test_config_check_names_every_problem_and_exits_2_without_traceback(root: Path, cli) -> None:
    out = cli(
        "config",
        "check",
        env={
            "ENV_FOR_DYNACONF": "production",
            "MAX_TOKENS": "lots",
            "HANDLER_TURN__MIN_ENDPOINT_DELAY": "0.4",
        },
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert (
        "llm.max_tokens = 'lots' (from environment variable MAX_TOKENS): must be a whole number" in out.stderr
    )
    assert "did you mean 'min_endpointing_delay'" in out.stderr
    assert "OPENAI_API_KEY" in out.stderr


def test_unknown_environment_exits_2(root: Path, cli) -> None:
    out = cli("config", "check", env={"ENV_FOR_DYNACONF": "prodution"})
    assert out.returncode == 2 and "did you mean 'production'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("env", ["dev", "fast", "stable", "production"])
def test_config_check_passes_in_every_environment_with_keys(
    root: Path, planted: dict[str, str], cli, env: str
) -> None:
    out = cli("config", "check", "--env", env)
    assert out.returncode == 0, out.stderr
    assert f"environment {env}" in out.stdout


def test_config_show_json_says_where_each_value_came_from(root: Path, planted: dict[str, str], cli) -> None:
    (root / ".env").write_text("MAX_TOKENS=250\n")
    out = cli("config", "show", "--json", "--env", "fast", env={"MIN_ENDPOINTING_DELAY": "0.35"})
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["env"] == "fast"
    s = doc["settings"]
    assert s["turn.min_endpointing_delay"] == {
        "value": 0.35,
        "source": "environment variable MIN_ENDPOINTING_DELAY",
    }
    assert s["llm.max_tokens"] == {"value": 250, "source": ".env (MAX_TOKENS)"}
    assert s["logging.level"] == {"value": "WARNING", "source": "environments/fast.toml"}
    assert s["llm.temperature"]["source"] == config.DEFAULT_SOURCE
    assert doc["secrets"]["OPENAI_API_KEY"] == {
        "set": True,
        "value": "***",
        "source": "environment variable OPENAI_API_KEY",
    }


def test_plugins_list_json_is_machine_readable(root: Path, cli) -> None:
    out = cli("plugins", "list", "--json", "--env", "production")
    doc = json.loads(out.stdout)
    assert set(doc["stages"]) == {"vad", "stt", "llm", "tts", "turn", "logging", "retry", "records"}
    assert doc["stages"]["llm"]["selected"] == "openai"
    assert doc["stages"]["turn"]["selected"] == "vad"  # turn.detection names turn detection's provider


def test_a_planted_secret_never_appears_in_any_output(root: Path, planted: dict[str, str], cli) -> None:
    (root / ".secrets.toml").write_text('ELEVEN_API_KEY = "planted-from-secrets-file-0123456789"\n')
    secrets = [*planted.values(), "planted-from-secrets-file-0123456789"]
    secrets.remove(planted["LIVEKIT_URL"])  # a URL is configuration, shown redacted all the same
    runs = [
        cli("config", "show"),
        cli("config", "show", "--json"),
        cli("config", "check", "--start"),
        cli("plugins", "list"),
        cli("plugins", "list", "--json"),
        cli("config", "check", env={"HANDLER_LLM__MAX_TOKENS": "-1", "LOG_LEVEL": "DEBUG"}),
    ]
    for run in runs:
        for s in secrets:
            assert s not in run.stdout and s not in run.stderr, run.args


def test_log_lines_at_every_level_are_redacted(
    root: Path, planted: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    for fmt in ("text", "json"):
        settings = config.load("dev").with_overrides({"logging.format": fmt}, "test")
        configure_logging(settings, Registry.load())
        log = logging.getLogger("livekit.agents.some.plugin")
        log.debug("connecting with key %s", planted["OPENAI_API_KEY"])
        logging.getLogger("handler").error(
            "auth failed", extra={"header": f"Bearer {planted['SONIOX_API_KEY']}"}
        )
        err = capsys.readouterr().err
        assert "connecting with key ***" in err and "auth failed" in err
        for s in planted.values():
            if s.startswith("ws://"):
                continue
            assert s not in err


def test_production_logs_are_json_lines_with_quiet_libraries(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(config.load("production"), Registry.load())
    logging.getLogger("livekit").info("noise")
    logging.getLogger("openai").info("noise")
    logging.getLogger("handler.metrics").warning("turn", extra={"fields": {"n": 1, "ttfa_ms": 900}})
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert (doc["level"], doc["logger"], doc["msg"], doc["n"], doc["ttfa_ms"]) == (
        "WARNING",
        "handler.metrics",
        "turn",
        1,
        900,
    )


def test_guide_levels_apply_under_info(root: Path) -> None:
    configure_logging(config.load("stable"), Registry.load())
    assert logging.getLogger("livekit").level == logging.WARNING
    assert logging.getLogger("livekit.agents").level == logging.INFO
    for name in ("openai", "httpx", "httpcore"):
        assert logging.getLogger(name).level == logging.WARNING
    assert logging.getLogger().level == logging.INFO


def test_config_and_help_paths_import_no_heavy_modules(root: Path, planted: dict[str, str], cli) -> None:
    code = (
        "import sys; from handler.cli import app\n"
        "try:\n    app(['config', 'check'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in ('livekit', 'onnxruntime', 'pocketsphinx', 'numpy'))\n"
        "print('HEAVY', heavy)\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert "configuration OK" in out.stdout, out.stderr
    assert "HEAVY []" in out.stdout


def test_logs_analyze_reads_stdin_and_files_and_refuses_a_missing_one(tmp_path: Path, cli) -> None:
    import subprocess
    import sys

    log = tmp_path / "session.log"
    log.write_text(
        '{"ts": "2026-11-23T21:00:00.000Z", "level": "INFO", "logger": "handler.metrics", "msg": "turn",'
        ' "n": 1, "ttfa_ms": 900, "llm_ttft_ms": 2500, "false_interruptions": 2}\n'
        "2026-11-23T21:00:30.000Z DEBUG livekit.agents resumed false interrupted speech\n"
        "\x00\x01 garbage \xff\n"
    )
    out = cli("logs", "analyze", str(log), "--json", "--plot", str(tmp_path / "t.png"))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["turns"] == 1 and doc["lines"] == 3
    assert doc["false_interruptions"]["turn_lines"] == 2  # our lines count them per turn
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    piped = subprocess.run(
        [sys.executable, "-m", "handler", "logs", "analyze", "-"],
        input=log.read_bytes(),
        capture_output=True,
        check=False,
    )
    assert piped.returncode == 0 and b"MAX_TOKENS" in piped.stdout  # the slow LLM's advice
    missing = cli("logs", "analyze", str(tmp_path / "nope.log"))
    assert missing.returncode == 2 and "nope.log" in missing.stderr and "Traceback" not in missing.stderr


def test_a_secret_pasted_into_a_setting_is_redacted_everywhere(
    root: Path, planted: dict[str, str], cli
) -> None:
    key = planted["OPENAI_API_KEY"]
    env = {"HANDLER_LLM__OPENAI__API_KEY": key}
    for args in (
        ("config", "check", "--env", "production"),
        ("config", "show"),
        ("config", "show", "--json"),
    ):
        out = cli(*args, env=env)
        assert key not in out.stdout + out.stderr, args
    check = cli("config", "check", "--env", "production", env=env)
    assert check.returncode == 2 and "llm.openai.api_key = '***'" in check.stderr


@pytest.mark.parametrize(("code", "status"), [(None, 0), (3, 3), ("a message", 1)])
def test_the_exit_runs_threads_atexit_and_flushes_before_leaving(code: object, status: int) -> None:
    """main() leaves with os._exit (livekit's FFI threads must not meet interpreter finalization),
    so what finalization did must still happen: non-daemon threads joined, atexit run (the FFI's
    dispose, telemetry's last batch), buffered output flushed, the status kept."""
    import subprocess
    import sys

    program = (
        "import atexit, sys, threading, time\n"
        "from handler.cli import _exit_before_finalization\n"
        "atexit.register(lambda: print('atexit ran', end=''))\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread done'))).start()\n"
        "sys.stdout.write('buffered ')\n"
        f"_exit_before_finalization({code!r})\n"
        "print('never')\n"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert out.returncode == status
    assert out.stdout == "buffered thread done\natexit ran"
    assert out.stderr == ("a message\n" if status == 1 else "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--worker-cores", "64"], "--worker-cores 64: this process may use"),
        (["--worker-cores", "0"], "--worker-cores 0"),
        (["--executor", "fibre"], "worker.job_executor"),
        (["--set", "room.input_frame_ms=15"], "room.input_frame_ms"),
        (["--set", "nonsense"], "--set: 'nonsense' is not key=value"),
    ],
    ids=["too-many-cores", "no-core", "bad-executor", "bad-setting", "not-a-pair"],
)
def test_loadtest_refuses_a_bad_option_before_it_starts_anything(cli, args: list[str], message: str) -> None:
    out = cli("loadtest", "qa", *args, timeout=60)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
