"""The worker in a real LiveKit room: livekit-server on 127.0.0.1, `python -m handler start` as a
user starts it, and `python -m handler call` (or a bare rtc participant) as the caller.

Real-time: each call takes as long as its conversation. Assertions are invariants and generous
ranges (every turn answered, the agent heard what was said, TTFA between a floor and a bound),
never exact timings.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from livekit import api, rtc

from handler import config
from handler.sim.report import word_errors
from handler.testing.background import InBackground
from handler.testing.livekit_server import LiveKitServer
from handler.testing.worker_process import WorkerProcess, clean_env, settings_env

pytestmark = pytest.mark.realtime

REPO = Path(config.__file__).resolve().parent.parent
REGISTER_TIMEOUT = 30.0
SHORT = """\
name = "short"
description = "two questions: enough for a call to be under way when something happens to it"

[[turns]]
say = "what is the weather like today"
pause = 0.5

[[turns]]
say = "where is my order"

[expect]
interruptions = 0
"""
STORY = """\
name = "story"
description = "one question with a long answer"

[[turns]]
say = "tell me a story"
pause = 0.5
"""
PHRASES = json.dumps(
    [
        "what is the weather like today",
        "what time do you open tomorrow",
        "where is my order",
        "thank you very much",
        "tell me a story",
    ]
)
PLANTED_KEYS = {  # the production stack's keys: dummies the local provider servers accept
    "OPENAI_API_KEY": "sk-PLANTED-room-openai-0123456789",
    "ELEVEN_API_KEY": "el-PLANTED-room-eleven-0123456789",
    "SONIOX_API_KEY": "sx-PLANTED-room-soniox-0123456789",
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the checkout's settings (no developer .env), and the short scenario."""
    r = tmp_path / "root"
    r.mkdir()
    shutil.copy(REPO / "settings.toml", r / "settings.toml")
    shutil.copytree(REPO / "environments", r / "environments")
    (r / "short.toml").write_text(SHORT)
    (r / "story.toml").write_text(STORY)
    return r


@pytest.fixture
def start_worker(root: Path, real_livekit: LiveKitServer) -> Iterator[Callable[..., WorkerProcess]]:
    """Workers registered with the real server: dev (offline stack) unless told otherwise, with the
    recognizer knowing the scenarios' phrases, logging at INFO to see jobs come and go."""
    workers: list[WorkerProcess] = []

    def start(name: str = "worker", **env: str | None) -> WorkerProcess:
        w = WorkerProcess(
            clean_env(
                **{
                    config.ENV_VAR: "dev",
                    config.ROOT_VAR: str(root),
                    **real_livekit.env(),
                    "HANDLER_WORKER__PORT": "0",
                    # livekit's load is the whole machine's CPU, which the callers (and a busy
                    # test machine) share: a worker that marks itself full misses the dispatch,
                    # and livekit-server does not offer a room's job again
                    "HANDLER_WORKER__LOAD_THRESHOLD": "inf",
                    "HANDLER_LOGGING__LEVEL": "INFO",
                    "HANDLER_STT__LOCAL__PHRASES": PHRASES,
                    **env,
                }
            ),
            root,
            name=name,
        )
        workers.append(w)
        w.wait_for_log("registered worker", REGISTER_TIMEOUT)
        return w

    yield start
    for w in workers:
        w.kill()


class Caller:
    """`python -m handler call ... --json` as a user runs it; its progress lines are read as they come."""

    def __init__(self, server: LiveKitServer, root: Path, *args: str, env: str = "dev") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "handler", "call", *args, "--json"],
            cwd=root,
            env=clean_env(**{config.ENV_VAR: env, config.ROOT_VAR: str(root), **server.env()}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            assert self.proc.poll() is None and time.monotonic() < deadline, f"no {text!r}:\n{self.stderr}"
            time.sleep(0.05)

    def finish(self, timeout: float = 120) -> tuple[int, dict[str, Any] | None, str]:
        assert self.proc.stdout is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"call still running after {timeout} s:\n{self.stderr[-3000:]}") from None
        out = self.proc.stdout.read()
        self._reader.join(10)
        doc = json.loads(out) if out.strip().startswith("{") else None
        return self.proc.returncode, doc, self.stderr


def call(
    server: LiveKitServer, root: Path, *args: str, env: str = "dev", timeout: float = 120
) -> tuple[int, dict[str, Any] | None, str]:
    return Caller(server, root, *args, env=env).finish(timeout)


def assert_answered(doc: dict[str, Any], turns: int) -> None:
    """Every turn answered within a generous bound, the agent heard what was said."""
    assert [t["kind"] for t in doc["turns"]] == ["turn"] * turns, doc
    for t in doc["turns"]:
        # the floor: the VAD's silence window alone is 0.5 s; 6 s is an outage, not a slow turn
        assert t["ttfa"] is not None and 0.5 < t["ttfa"] < 6.0, t
        assert t["reply"], t
        errors, words = word_errors(t["said"], t["recognized"])
        assert errors <= words // 2, t  # pocketsphinx on Opus audio: most words, not all
    assert doc["errors"] == []


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if " ERROR " in line or "Traceback" in line]


def assert_no_secrets(text: str, real_livekit: LiveKitServer) -> None:
    for value in (real_livekit.api_secret, *PLANTED_KEYS.values()):
        assert value not in text


# ------------------------------------------------------------------------------ conversations


def test_dev_stack_holds_the_qa_conversation_in_a_real_room(
    real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker()
    rc, doc, err = call(real_livekit, root, "qa", "--out", str(root / "out"))
    assert rc == 0 and doc is not None, err[-3000:]
    assert_answered(doc, 4)
    assert doc["summary"]["interruptions"] == 0
    # the same WAVs and report as simulate
    assert {p.name for p in (root / "out").iterdir()} == {"report.json", "user.wav", "agent.wav"}
    worker.wait_for_log("job ended: session and HTTP pool closed", 20)
    assert error_lines(worker.stderr) == []
    assert_no_secrets(worker.stderr + err, real_livekit)


def test_production_cloud_stack_holds_the_qa_conversation_in_a_real_room(
    real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    from handler.registry import Registry
    from handler.sim import cloudsim

    production = config.load("production", root=REPO)
    servers = InBackground(lambda: cloudsim.running(production, Registry.load(), json.loads(PHRASES)))
    with servers as (_, fakes):
        worker = start_worker(
            **{config.ENV_VAR: "production", **PLANTED_KEYS, **settings_env(fakes.overrides())}
        )
        rc, doc, err = call(real_livekit, root, "qa", env="production")
    assert rc == 0 and doc is not None, err[-3000:] + worker.stderr[-3000:]
    assert_answered(doc, 4)
    assert error_lines(worker.stderr) == []
    assert_no_secrets(worker.stderr + err, real_livekit)


@pytest.mark.xfail(
    reason="issue 13, open: in the room (Opus audio) turn 1 was recognized as 'four two seven' only, "
    "so the pause was not held as in simulate; cause not found yet",
    strict=False,
)
def test_smart_turn_holds_a_pause_mid_sentence_in_a_real_room(
    real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    from handler.testing import pauses

    sc = pauses.write_scenario(root, gap=1.5)  # "my order number is, um," ... "four two seven"
    phrases = json.dumps(
        ["my order number is", pauses.REST, f"my order number is {pauses.REST}", pauses.QUESTION]
    )
    # dev (the offline stack): the turn would end 0.5 s after the VAD's 0.5 s of silence, well
    # inside the 1.5 s pause, but for the model
    worker = start_worker(HANDLER_TURN__DETECTION="smart-turn", HANDLER_STT__LOCAL__PHRASES=phrases)
    rc, doc, err = call(real_livekit, root, sc.name)
    assert rc == 0 and doc is not None, err[-3000:] + worker.stderr[-3000:]
    # the model was loaded by the job process's prewarm
    assert "smart-turn model smart-turn-v3.2-cpu loaded" in worker.stderr, worker.stderr[-3000:]
    paused, question = doc["turns"]
    # held through the pause: the agent heard one sentence, not "my order number is" on its own
    assert "order" in paused["recognized"] and "four" in paused["recognized"], paused
    assert paused["reply"] and question["reply"], doc
    assert doc["errors"] == [] and error_lines(worker.stderr) == []


# ------------------------------------------------------------------------------ workers coming and going


def test_sigterm_drains_a_call_to_its_end_takes_no_new_job_and_exits_0(
    real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    drain_timeout = 60
    worker = start_worker(HANDLER_WORKER__DRAIN_TIMEOUT=str(drain_timeout))
    ongoing = Caller(real_livekit, root, "short.toml")
    ongoing.wait_for("turn 1: ")  # mid-call: the first reply is playing
    t0 = time.monotonic()
    worker.proc.send_signal(15)
    worker.wait_for_log("draining worker", 10)

    # while draining, a new call finds no agent
    rc_new, _, err_new = call(real_livekit, root, "short.toml", "--agent-timeout", "6", timeout=60)
    assert rc_new == 1 and "no agent" in err_new, err_new[-2000:]

    rc, doc, err = ongoing.finish()
    assert rc == 0 and doc is not None, err[-3000:]
    assert_answered(doc, 2)  # the call went on to its last turn
    assert worker.wait(drain_timeout, "after the drained call ended") == 0, worker.stderr[-3000:]
    assert time.monotonic() - t0 < drain_timeout
    assert error_lines(worker.stderr) == []


def test_a_killed_worker_is_reported_by_the_caller(
    real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    workers = [start_worker("worker-a"), start_worker("worker-b")]

    def jobs(w: WorkerProcess) -> int:
        return w.stderr.count("received job request")

    # a call under way (livekit picks the worker): kill the worker that has it
    ongoing = Caller(real_livekit, root, "short.toml")
    ongoing.wait_for("turn 1: ")  # the first reply is playing
    [victim] = [w for w in workers if jobs(w) == 1]
    [bystander] = [w for w in workers if w is not victim]
    victim.kill()
    rc, doc, err = ongoing.finish()
    assert rc == 1 and "the agent left" in err, err[-3000:]
    assert doc is not None and doc["turns"][0]["ttfa"] is not None  # what happened before is reported
    assert jobs(bystander) == 0 and error_lines(bystander.stderr) == []
    # Not asserted: that the other worker takes the next call. On a loaded machine livekit-server
    # was seen to fail that room's dispatch after a worker's death ("failed to send job request:
    # no servers available") and never offer it again; the cause is not found yet.


# ------------------------------------------------------------------------------ callers that do little


def token(server: LiveKitServer, room: str, agent_name: str = "voice-handler") -> str:
    return (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity("quiet-caller")
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .with_room_config(api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent_name)]))
        .to_jwt()
    )


async def test_a_caller_who_only_publishes_silence_ends_the_job_cleanly(
    real_livekit: LiveKitServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = await asyncio.to_thread(start_worker)
    room = rtc.Room()
    joined = asyncio.Event()
    room.on("participant_connected", lambda p: joined.set())
    await room.connect(real_livekit.url, token(real_livekit, "silent-room"))
    source = rtc.AudioSource(16000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    await asyncio.wait_for(joined.wait(), 30)  # the agent is in the room
    silence = rtc.AudioFrame(np.zeros(160, np.int16).tobytes(), 16000, 1, 160)
    for _ in range(300):  # 3 s of digital silence at real-time pace
        await source.capture_frame(silence)
        await asyncio.sleep(0.01)
    await room.disconnect()

    await asyncio.to_thread(worker.wait_for_log, "job ended: session and HTTP pool closed", 20)
    assert "handler.metrics turn" not in worker.stderr  # silence is no turn
    assert "session summary turns=0" in worker.stderr
    assert error_lines(worker.stderr) == []


def test_a_caller_who_leaves_mid_reply_ends_the_job_cleanly(
    real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker()
    leaving = Caller(real_livekit, root, "story.toml")
    leaving.wait_for("turn 1: ")  # the (long) reply is playing
    leaving.proc.kill()  # the caller's process dies: the server sees the participant go
    leaving.proc.wait(10)
    worker.wait_for_log("job ended: session and HTTP pool closed", 30)
    assert "session summary turns=" in worker.stderr
    assert error_lines(worker.stderr) == []


# ------------------------------------------------------------------------------ a caller's mistakes


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({"LIVEKIT_API_SECRET": "wrong-" + "x" * 40}, 2, "check LIVEKIT_API_KEY and LIVEKIT_API_SECRET"),
        ({"LIVEKIT_URL": "ws://127.0.0.1:9"}, 2, "check LIVEKIT_URL"),
        ({"LIVEKIT_URL": "127.0.0.1:7880"}, 2, "LIVEKIT_URL must start with ws://"),
        ({"LIVEKIT_API_KEY": None}, 2, "LIVEKIT_API_KEY"),
        ({}, 1, "no agent 'voice-handler' joined"),  # no worker registered
    ],
    ids=["wrong-secret", "nothing-there", "not-a-url", "no-key", "no-worker"],
)
def test_call_refuses_with_one_message(
    real_livekit: LiveKitServer, root: Path, change: dict[str, str | None], code: int, message: str
) -> None:
    env = clean_env(**{config.ENV_VAR: "dev", config.ROOT_VAR: str(root), **real_livekit.env(), **change})
    out = subprocess.run(
        [sys.executable, "-m", "handler", "call", "short.toml", "--agent-timeout", "3"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert real_livekit.api_secret not in out.stderr
    assert "eyJ" not in out.stderr  # no token either
