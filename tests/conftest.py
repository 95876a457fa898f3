"""Shared fixtures. Tests never see the developer's own .env / .secrets.toml or installed
third-party plugins unless a test puts them there."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc

from handler.fakes import livekit_server
from handler.fakes.livekit_server import LiveKitServer

REPO = Path(__file__).resolve().parent.parent
PLANTED = {
    "OPENAI_API_KEY": "sk-planted-openai-0123456789abcdef",
    "ELEVEN_API_KEY": "planted-eleven-0123456789abcdef",
    "SONIOX_API_KEY": "planted-soniox-0123456789abcdef",
    "LIVEKIT_URL": "ws://127.0.0.1:9",
    "LIVEKIT_API_KEY": "planted-lk-key-0123456789",
    "LIVEKIT_API_SECRET": "planted-lk-secret-0123456789abcdef",
}
SECRET_NAMES = tuple(PLANTED)
FLAT = (
    "MIN_ENDPOINTING_DELAY",
    "INTERRUPTION_THRESHOLD",
    "ENABLE_INTERRUPTIONS",
    "HTTP_TIMEOUT",
    "HTTP_MAX_CONNECTIONS",
    "MAX_RETRIES",
    "MAX_TOKENS",
    "LOG_LEVEL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No secrets, flat keys or HANDLER_* overrides leak in from the machine; only built-in plugins."""
    for name in list(os.environ):
        if name in SECRET_NAMES or name in FLAT or name.startswith("HANDLER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VOICE_HANDLER_PLUGINS", "")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--env-matrix",
        default="",
        metavar="ENVS",
        help="run each test marked env_matrix once under each of these environments "
        "(comma-separated, e.g. dev,fast,stable,production) instead of once under ENV_FOR_DYNACONF",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    envs = [e for e in metafunc.config.getoption("env_matrix").split(",") if e]
    if envs and metafunc.definition.get_closest_marker("env_matrix"):
        metafunc.parametrize("matrix_env", envs, indirect=True, ids=lambda env: f"env={env}")


@pytest.fixture(autouse=True)
def matrix_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """An env_matrix test's environment under `--env-matrix` (what the test and the commands it
    runs read); other tests run under the process's ENV_FOR_DYNACONF."""
    if env := getattr(request, "param", None):
        monkeypatch.setenv("ENV_FOR_DYNACONF", env)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory to run in: the shipped defaults apply, and tests add their own layers
    (settings.toml, environments/, .env, .secrets.toml) there; no developer's .env leaks in."""
    (tmp_path / "environments").mkdir()
    monkeypatch.setenv("VOICE_HANDLER_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in PLANTED.items():
        monkeypatch.setenv(k, v)
    return dict(PLANTED)


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m handler ...` as a user runs it, with this test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "handler", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def tone(seconds: float, amplitude: float = 0.3, rate: int = 16000) -> Iterator[rtc.AudioFrame]:
    """A 300 Hz tone in 10 ms frames: what the Soniox fake hears as speech."""
    n = int(seconds * rate)
    pcm = (amplitude * np.sin(2 * np.pi * 300 * np.arange(n) / rate) * 32767).astype(np.int16)
    for i in range(0, n, rate // 100):
        chunk = pcm[i : i + rate // 100]
        yield rtc.AudioFrame(chunk.tobytes(), rate, 1, len(chunk))


@pytest.fixture
def cli():
    return run_cli


BURST = REPO / "tests" / "scenarios" / "burst.toml"
"""A 0.4 s "uh huh" into a long reply: the VAD counts 0.86-1.02 s of speech for it at every window
phase (tests/test_scenario_sounds.py proves it)."""
BURST_MIN_INTERRUPTION = 0.8
BURST_THRESHOLDS = {0.3: True, 0.9: False}
"""interruption_threshold -> whether the burst pauses the agent: 0.8 * 0.3 / 0.5 = 0.48 s of speech
needed (clearly reached), 0.8 * 0.9 / 0.5 = 1.44 s (clearly not)."""


# ------------------------------------------------------------------------------ livekit-server


SLOWEST_FIRST = (
    "tests/test_room.py",
    "tests/test_worker_start.py",
    "tests/test_deploy.py",
    "tests/test_web.py",
)
"""Their tests take 5-50 s each: a worker started (and a call made through a real livekit-server),
a wheel built and installed. Left to the end they kept one xdist worker busy alone for minutes."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest tests first, so pytest-xdist's workers start them first and the run does not end
    with one worker alone on a 50 s call while the others idle: the real room's and the worker's
    tests, then the other real-time conversations (the bench run among them), then the rest (a
    stable sort keeps each group's order)."""

    def rank(item: pytest.Item) -> int:
        if item.nodeid.startswith(SLOWEST_FIRST):
            return 0
        return 1 if item.get_closest_marker("realtime") else 2

    items.sort(key=rank)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Each phase's report on the test item, so a fixture's teardown knows whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def livekit_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveKitServer]:
    """One real livekit-server for the test session (about 0.2 s to start, but its rooms are
    independent, so tests share it)."""
    binary = livekit_server.find()
    if binary is None:
        message = f"livekit-server is not installed: run `{livekit_server.INSTALL_COMMAND}` (needs Go)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it: its absence is a broken set-up, not a skip
        pytest.skip(message)
    with LiveKitServer(binary, tmp_path_factory.mktemp("livekit-server")) as server:
        yield server


@pytest.fixture
def real_livekit(
    livekit_server_session: LiveKitServer, request: pytest.FixtureRequest
) -> Iterator[LiveKitServer]:
    """The real server; a failing test shows what the server logged while it ran."""
    offset = livekit_server_session.log_size()
    yield livekit_server_session
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"--- livekit-server log during this test ---\n{livekit_server_session.log(offset)[-6000:]}")


@pytest.fixture(autouse=True)
def fresh_provider_health():
    """Provider health (handler.resilience.breaker) is per process: no test inherits another's."""
    from handler.resilience import breaker

    breaker.reset_all()
    yield
    breaker.reset_all()
