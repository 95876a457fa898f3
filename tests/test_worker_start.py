"""`python -m handler start` as a real subprocess against the fake LiveKit server: it registers
with the configured agent name, drains and exits 0 on SIGTERM, never prints a secret, is refused
with a wrong API secret, and without LIVEKIT_URL ends in one clear message (exit status 2).

Plus fast in-process checks of the fake server's own protocol handling."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from livekit import api
from livekit.protocol import agent
from support.fake_livekit import FakeLiveKitServer

from handler import config
from handler.fakes.livekit_server import LiveKitServer
from handler.fakes.worker_process import WorkerProcess, clean_env

REPO = Path(config.__file__).resolve().parent.parent
REGISTER_TIMEOUT = 30.0
EXIT_TIMEOUT = 20.0

API_KEY = "APIplantedkey"
# distinctive values, so finding one in the worker's output is unambiguous (and >= 32 bytes, so
# PyJWT does not warn about the key length)
PLANTED = {
    "LIVEKIT_API_SECRET": "lk-secret-PLANTED-" + secrets.token_hex(16),
    "OPENAI_API_KEY": "sk-PLANTED-openai-" + secrets.token_hex(8),
    "ELEVEN_API_KEY": "el-PLANTED-eleven-" + secrets.token_hex(8),
    "SONIOX_API_KEY": "sx-PLANTED-soniox-" + secrets.token_hex(8),
}


# ------------------------------------------------------------------------------ helpers


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty directory: the shipped settings apply, and a developer's .env / .secrets.toml cannot
    leak in."""
    r = tmp_path / "root"
    r.mkdir()
    return r


def configured_agent_name(root: Path, env: str = "production") -> str:
    return str(config.load(env, root=root).get("worker.agent_name"))


def worker_env(root: Path, **overrides: str | None) -> dict[str, str]:
    """Production settings, the planted secrets and a light worker; nothing from the machine."""
    return clean_env(
        **{
            config.ENV_VAR: "production",
            config.ROOT_VAR: str(root),
            "LIVEKIT_API_KEY": API_KEY,
            **PLANTED,
            "HANDLER_WORKER__PORT": "0",
            "HANDLER_WORKER__NUM_IDLE_PROCESSES": "0",
            **overrides,
        }
    )


@pytest.fixture
def livekit() -> Iterator[FakeLiveKitServer]:
    with FakeLiveKitServer(api_key=API_KEY, api_secret=PLANTED["LIVEKIT_API_SECRET"]).in_thread() as server:
        yield server


@pytest.fixture
def start_worker(root: Path) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(**env: str | None) -> WorkerProcess:
        w = WorkerProcess(worker_env(root, **env), root)
        workers.append(w)
        return w

    yield start
    for w in workers:  # only the processes this test started
        w.kill()


def assert_no_secrets(worker: WorkerProcess, server: FakeLiveKitServer | None = None) -> None:
    output = worker.stdout + worker.stderr
    for name, value in PLANTED.items():
        assert value not in output, f"{name}'s value appears in the worker's output"
    for attempt in server.auth_attempts if server else ():
        assert attempt.token and attempt.token not in output, "a bearer token was printed"


LOAD_DIAGNOSTIC = '"msg": "event loop blocked for'
"""livekit's loop monitor: it times callbacks by the wall clock, so on a busy machine any of them
can cross its 100 ms threshold. What load causes is not what this suite asserts."""


def warning_lines(worker: WorkerProcess) -> list[str]:
    return [line for line in worker.stderr.splitlines() if line.strip() and LOAD_DIAGNOSTIC not in line]


# ------------------------------------------------------------------------------ start


def test_start_registers_drains_and_exits_0_on_sigterm(
    livekit: FakeLiveKitServer, start_worker: Callable[..., WorkerProcess], root: Path
) -> None:
    worker = start_worker(LIVEKIT_URL=livekit.url)
    reg = livekit.wait_registered_sync(REGISTER_TIMEOUT)
    registered_after = time.monotonic() - worker.started

    assert reg.agent_name == configured_agent_name(root) == "voice-handler"
    assert reg.type == agent.JobType.JT_ROOM
    assert reg.version  # livekit-agents' version
    assert reg.allowed_permissions.agent
    [attempt] = livekit.auth_attempts
    assert attempt.accepted and attempt.path == "/agent" and attempt.api_key == API_KEY
    # the worker reports its status right after registering
    livekit.wait_for_sync(lambda: livekit.messages_of("update_worker"), 10)

    rc, took = worker.terminate()
    assert rc == 0, worker.stderr[-3000:]
    print(f"registered {registered_after:.1f} s after spawn; exited {took:.2f} s after SIGTERM")

    # production drains: it tells the server it is full (takes no new jobs) before it leaves
    statuses = [m.update_worker.status for m in livekit.messages_of("update_worker")]
    assert statuses[-1] == agent.WorkerStatus.WS_FULL
    livekit.wait_for_sync(lambda: not livekit.connections[0].open, 5)
    assert livekit.connections[0].close_code == 1000  # a clean close, not a dropped socket

    assert_no_secrets(worker, livekit)
    assert "Traceback" not in worker.stderr
    # production logs at WARNING: an uneventful start and stop prints nothing at all
    assert warning_lines(worker) == [], worker.stderr


def test_agent_name_override_and_prewarm(
    real_livekit: LiveKitServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(
        **real_livekit.env(),
        HANDLER_WORKER__AGENT_NAME="support-line-7",
        HANDLER_WORKER__NUM_IDLE_PROCESSES="1",  # one pre-started process: runs the prewarm
        HANDLER_LOGGING__LEVEL="INFO",  # to see livekit's registration and process lifecycle lines
        HANDLER_LOGGING__FORMAT="text",
    )
    worker.wait_for_log("registered worker agent_name=support-line-7", REGISTER_TIMEOUT)
    # the idle process ran prewarm_process (config + silero VAD) without an error
    worker.wait_for_log("process initialized", REGISTER_TIMEOUT)
    assert "initialization failed" not in worker.stderr

    rc, _ = worker.terminate()
    assert rc == 0, worker.stderr[-3000:]
    assert real_livekit.api_secret not in worker.stdout + worker.stderr
    assert_no_secrets(worker)
    assert "Traceback" not in worker.stderr


def test_wrong_api_secret_is_refused(
    livekit: FakeLiveKitServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    wrong = "lk-secret-WRONG-" + secrets.token_hex(16)
    worker = start_worker(LIVEKIT_URL=livekit.url, LIVEKIT_API_SECRET=wrong)
    refused = livekit.wait_for_sync(lambda: livekit.rejected_auth, REGISTER_TIMEOUT)[0]
    assert refused.status == 401
    assert "signature" in refused.reason
    assert refused.api_key == API_KEY
    worker.wait_for_log("failed to connect to livekit", 10)

    rc, _ = worker.terminate()  # it would keep retrying (16 times, up to 10 s apart)
    assert rc == 0, worker.stderr[-3000:]
    assert livekit.registrations == []
    assert not any(a.accepted for a in livekit.auth_attempts)
    assert wrong not in worker.stdout + worker.stderr
    assert_no_secrets(worker, livekit)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], str | None], timeout: float, why: Callable[[], str]) -> str:
    deadline = time.monotonic() + timeout
    while (value := predicate()) is None:
        assert time.monotonic() < deadline, f"timed out after {timeout} s: {why()}"
        time.sleep(0.2)
    return value


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


@pytest.mark.parametrize("operator_dir", [False, True], ids=["own-temp-dir", "operator-dir"])
def test_prometheus_port_serves_the_job_processes_stage_histograms(
    real_livekit: LiveKitServer,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
    operator_dir: bool,
    request: pytest.FixtureRequest,
) -> None:
    port = free_port()
    # the worker's own temporary directory: other tests' workers make theirs at the same time
    # (short: multiprocessing puts its forkserver's unix socket there, 107 bytes at most)
    tmp = Path(tempfile.mkdtemp(prefix="vh-"))
    request.addfinalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
    chosen = tmp_path / "not" / "yet" / "there"  # the plugin and livekit create it
    worker = start_worker(
        **real_livekit.env(),
        HANDLER_LOGGING__LEVEL="INFO",
        HANDLER_WORKER__PROMETHEUS_PORT=str(port),
        HANDLER_WORKER__NUM_IDLE_PROCESSES="1",  # its prewarm loads the metrics plugin
        PROMETHEUS_MULTIPROC_DIR=str(chosen) if operator_dir else None,
        TMPDIR=str(tmp),
    )
    worker.wait_for_log("registered worker", REGISTER_TIMEOUT)
    # the idle job process's zero series, and with the operator's directory also livekit's
    # main-process gauges
    wanted = ['voice_handler_stage_seconds_count{stage="llm_ttft"} 0.0']
    if operator_dir:
        wanted.append("lk_agents_worker_load{")

    def scraped() -> str | None:
        text = scrape(port)
        return text if all(w in text for w in wanted) else None

    seen = lambda: f"/metrics:\n{scrape(port)[-2000:]}\nworker:\n{worker.stderr[-3000:]}"  # noqa: E731
    text = wait_for(scraped, REGISTER_TIMEOUT, seen)
    for stage in ("eou", "transcription", "llm_ttft", "tts_ttfb"):
        assert f'voice_handler_stage_seconds_bucket{{le="1.0",stage="{stage}"}} 0.0' in text
    for name in ("time_to_first_audio_seconds_count", "turns_total", "false_interruptions_total"):
        assert f"voice_handler_{name} 0.0" in text
    # multi-process collection: sample files, and no in-process `_created` samples
    assert "voice_handler_turns_created" not in text
    ours = set(tmp.glob("voice-handler-metrics-*"))
    metrics_dir = chosen if operator_dir else ours.pop()
    assert not ours and list(metrics_dir.glob("*.db"))

    rc, _ = worker.terminate()
    assert rc == 0, worker.stderr[-3000:]
    # the worker removes its own temporary directory and leaves the operator's
    assert metrics_dir.exists() is operator_dir
    assert_no_secrets(worker)
    assert "Traceback" not in worker.stderr


def test_start_without_livekit_url_exits_2(start_worker: Callable[..., WorkerProcess]) -> None:
    worker = start_worker(LIVEKIT_URL=None)
    try:
        rc = worker.proc.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"start kept running without LIVEKIT_URL:\n{worker.stderr}") from None
    assert rc == 2
    assert "LIVEKIT_URL" in worker.stderr
    assert "Traceback" not in worker.stderr
    assert_no_secrets(worker)


# ------------------------------------------------------------------------------ the fake itself


def token(secret: str = PLANTED["LIVEKIT_API_SECRET"], key: str = API_KEY, agent_grant: bool = True) -> str:
    return api.AccessToken(key, secret).with_grants(api.VideoGrants(agent=agent_grant)).to_jwt()


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({}, 401, "missing bearer token"),
        ({"Authorization": "Bearer not-a-jwt"}, 401, "malformed token"),
        ({"Authorization": f"Bearer {token(secret='x' * 40)}"}, 401, "signature"),
        ({"Authorization": f"Bearer {token(key='otherkey')}"}, 401, "unknown API key"),
        ({"Authorization": f"Bearer {token(agent_grant=False)}"}, 403, "agent grant"),
    ],
)
async def test_fake_refuses_bad_tokens(headers: dict[str, str], status: int, reason: str) -> None:
    async with FakeLiveKitServer(api_key=API_KEY, api_secret=PLANTED["LIVEKIT_API_SECRET"]) as lk:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await http.ws_connect(f"{lk.url}/agent", headers=headers)
        assert e.value.status == status
        [attempt] = lk.rejected_auth
        assert attempt.status == status and reason in attempt.reason


async def test_fake_registers_and_answers_ping() -> None:
    async with FakeLiveKitServer(api_key=API_KEY, api_secret=PLANTED["LIVEKIT_API_SECRET"]) as lk:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(
                f"{lk.url}/some/prefix/agent", headers={"Authorization": f"Bearer {token()}"}
            )
            reg = agent.WorkerMessage()
            reg.register.agent_name = "probe"
            reg.register.version = "0"
            await ws.send_bytes(reg.SerializeToString())
            reply = agent.ServerMessage.FromString(await ws.receive_bytes(timeout=5))
            assert reply.register.worker_id.startswith("AW_")
            assert reply.register.server_info.region == "local"

            await ws.send_bytes(agent.WorkerMessage(ping=agent.WorkerPing(timestamp=42)).SerializeToString())
            pong = agent.ServerMessage.FromString(await ws.receive_bytes(timeout=5))
            assert pong.pong.last_timestamp == 42

            await ws.close()
        await lk.wait_for(lambda: not lk.connections[0].open, 5)
        assert [m.kind for m in lk.messages] == ["register", "ping"]
