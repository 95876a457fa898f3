"""The worker in a real LiveKit room: livekit-server on 127.0.0.1, `python -m handler start` as a
user starts it, and `python -m handler call` (or a bare rtc participant) as the caller.

Real-time: each call takes as long as its conversation. Assertions are invariants and generous
ranges (every turn answered, the agent heard what was said, TTFA between a floor and a bound),
never exact timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from livekit import api, rtc

from handler import config
from handler.fakes.background import InBackground
from handler.fakes.livekit_server import LiveKitServer
from handler.fakes.worker_process import WorkerProcess, clean_env, settings_env
from handler.resilience.decider import EVIDENCE
from handler.sim.report import word_errors

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
ORPHANED = SHORT.replace('say = "where is my order"', 'say = "where is my order"\npause = 30.0')
"""`short` with 30 s of silence before its second question: a call that outlasts how long an agent
whose worker was killed can stay in the room (16 s seen in a loaded `nox` run, where the caller's
15 s wait for the second reply ended first and the call finished without the agent leaving). It
ends as soon as the agent leaves."""
STORY = """\
name = "story"
description = "one question with a long answer"

[[turns]]
say = "tell me a story"
pause = 0.5
"""
THREE = """\
name = "three"
description = "three questions: a stage that fails for good is decided on before the last"

[[turns]]
say = "what is the weather like today"
pause = 0.5

[[turns]]
say = "where is my order"

[[turns]]
say = "thank you very much"
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
    """The shipped settings (no developer .env), and the short scenario."""
    r = tmp_path / "root"
    r.mkdir()
    (r / "short.toml").write_text(SHORT)
    (r / "orphaned.toml").write_text(ORPHANED)
    (r / "story.toml").write_text(STORY)
    (r / "three.toml").write_text(THREE)
    return r


@pytest.fixture
def start_worker(root: Path, real_livekit: LiveKitServer) -> Iterator[Callable[..., WorkerProcess]]:
    """Workers registered with the real server: dev (offline stack) unless told otherwise, with the
    recognizer knowing the scenarios' phrases, logging at INFO to see jobs come and go."""
    workers: list[WorkerProcess] = []

    def start(name: str = "worker", *, own_group: bool = False, **env: str | None) -> WorkerProcess:
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
            own_group=own_group,
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


def test_the_thread_executor_holds_two_calls_at_once_in_one_process(
    real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    """worker.job_executor = "thread": both calls are threads of the worker's main process, each
    with its own event loop and HTTP pool."""
    from handler.fakes.livekit_server import free_port

    metrics = free_port()
    worker = start_worker(HANDLER_WORKER__JOB_EXECUTOR="thread", HANDLER_WORKER__PROMETHEUS_PORT=str(metrics))
    callers = [Caller(real_livekit, root, "short.toml") for _ in range(2)]
    for c in callers:
        rc, doc, err = c.finish()
        assert rc == 0 and doc is not None, err[-3000:] + worker.stderr[-3000:]
        assert_answered(doc, 2)
    worker.wait_for_log("job ended: session and HTTP pool closed", 20, count=2)
    # no job process: every line comes from the worker's own pid
    assert {int(p) for p in re.findall(r" pid=(\d+)", worker.stderr)} <= {worker.proc.pid}
    assert error_lines(worker.stderr) == []
    # the calls' samples are this process's: /metrics serves them without a multiprocess directory
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as r:
        text = r.read().decode()
    [count] = re.findall(r"^voice_handler_time_to_first_audio_seconds_count (\S+)$", text, re.M)
    assert float(count) >= 4, text[-2000:]


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


def test_a_worker_exports_a_trace_per_turn_with_the_job_and_room_ids(
    real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    from support.otlp_receiver import OTLPReceiver

    with InBackground(OTLPReceiver) as receiver:
        worker = start_worker(HANDLER_TELEMETRY__ENDPOINT=receiver.endpoint)
        rc, doc, err = call(real_livekit, root, "short.toml", "--room", "traced")
        assert rc == 0 and doc is not None, err[-3000:]
        worker.wait_for_log("job ended: session and HTTP pool closed", 20)
        deadline = time.monotonic() + 10  # spans go out in 1 s batches
        while not receiver.named("agent_session") and time.monotonic() < deadline:
            time.sleep(0.1)
    assert_answered(doc, 2)
    (session,) = receiver.named("agent_session")
    # every span carries the ids the worker's log lines carry
    jobs = {s.attributes.get("voice_handler.job") for s in receiver.spans}
    # the room by its keyed pseudonym (redaction.room_id), in spans and in every log line
    from handler.redaction import pseudonym

    room = pseudonym("traced", real_livekit.api_secret)
    assert {s.attributes.get("voice_handler.room") for s in receiver.spans} == {room}
    assert "traced" not in worker.stderr and f"room={room}" in worker.stderr.replace('"room": "', "room=")
    assert len(jobs) == 1 and None not in jobs, jobs
    # each user turn roots a trace linked to the session; every reply is in a turn's trace
    roots = receiver.named("user_turn")
    assert len(roots) >= 2 and all(not r.parent_id and r.links[0].span_id == session.span_id for r in roots)
    turn_traces = {r.trace_id for r in roots}
    assert {s.trace_id for s in receiver.named("llm_node")} <= turn_traces
    assert error_lines(worker.stderr) == []


# ------------------------------------------------------------------------------ a stage down for good

APOLOGY = "Sorry, our service is down; please call again later."


def json_lines(text: str) -> list[dict[str, Any]]:
    """The worker's log lines (production logs JSON), garbage skipped."""
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict):
                out.append(doc)
    return out


def stamp(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("stage", ["llm", "stt"], ids=["llm-refused", "stt-stalled"])
def test_a_stage_down_for_good_ends_the_call_with_one_decision_the_caller_is_told(
    stage: str, real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    from handler.fakes import Fault
    from handler.fakes.livekit_server import free_port
    from handler.registry import Registry
    from handler.sim import cloudsim

    production = config.load("production", root=REPO)
    servers = InBackground(lambda: cloudsim.running(production, Registry.load(), json.loads(PHRASES)))
    with servers as (_, fakes):
        overrides = fakes.overrides()
        if stage == "llm":  # nobody listens: every connection is refused, for the whole call
            overrides["llm.openai.base_url"] = f"http://127.0.0.1:{free_port()}/v1"
        else:  # every stream takes the audio and never says a word
            fakes.stt.faults.push(*[Fault.stall(300.0, after=0)] * 50)
        worker = start_worker(
            **{
                config.ENV_VAR: "production",
                **PLANTED_KEYS,
                **settings_env({**overrides, "resilience.apology": APOLOGY}),
                "HTTP_TIMEOUT": "2",
                "MAX_RETRIES": "2",
            }
        )
        rc, doc, err = call(real_livekit, root, "three.toml", env="production")
        worker.wait_for_log("job ended: session and HTTP pool closed", 30)
        spoken = fakes.tts.spoken()

    log = worker.stderr
    # the caller is told: the agent left mid-call, and `call` exits with a failed service's status
    assert rc == 1 and "the agent left" in err, err[-3000:] + log[-3000:]
    assert doc is not None and all(t["reply"] in ("", APOLOGY) for t in doc["turns"]), doc
    assert any(APOLOGY in text for text in spoken)  # the TTS works: the apology was said
    lines = json_lines(log)
    # livekit's own shutdown race: a frame forwarded into a stream the closing session has just
    # closed is logged as "Error in _forward..." (seen once, under load; not ours to count)
    errors = [
        line
        for line in lines
        if line.get("level") == "ERROR" and not line["msg"].startswith("Error in _forward")
    ]
    decisions = [line for line in errors if line["msg"].startswith("ending the session")]
    # one ERROR line says what was decided and why
    assert len(decisions) == 1 and f"{stage} is down" in decisions[0]["msg"], log[-3000:]
    # every request that failed for good was reported: counted (the summary; the turn lines, for
    # the turns the STT heard) and one ERROR line each (livekit's for the LLM, ours for the STT)
    [summary] = [line for line in lines if line.get("msg") == "session summary"]
    assert summary["errors"] >= EVIDENCE, summary  # a failed request and a failed probe at least
    # (and the STT's utterance still held when the call ended: lost, and said so)
    lost = [line for line in errors if "audio lost" in line["msg"]]
    assert len(errors) - 1 - len(lost) == summary["errors"], [e["msg"][:100] for e in errors]
    turns = [line for line in lines if line.get("msg") == "turn"]
    assert sum(t.get(f"{stage}_errors", 0) for t in turns) == (summary["errors"] if turns else 0), turns
    # ...each on the turn it belongs to: at most MAX_RETRIES retried attempts per request that
    # failed (an STT probe is one attempt; a reply asked for again is a request with all of its)
    assert all(t.get(f"{stage}_retries", 0) <= 2 * t.get(f"{stage}_errors", 0) for t in turns), turns
    # ...and the job ended cleanly, within the apology's time of the decision
    [ended] = [line for line in lines if line["msg"] == "job ended: session and HTTP pool closed"]
    assert stamp(ended) - stamp(decisions[0]) < production.get("resilience.apology_timeout") + 5
    assert_no_secrets(log + err, real_livekit)


# (stage, fault, consecutive requests, mid-call): the burst on the Soniox handshake at the
# call's start, and a longer one on the LLM mid-call
ROOM_BURSTS = [("stt", "503", 4, False), ("llm", "500", 6, True)]


@pytest.mark.parametrize(
    ("stage", "fault", "count", "mid"),
    ROOM_BURSTS,
    ids=[f"{s}-{n}x{f}-{'mid' if m else 'start'}" for s, f, n, m in ROOM_BURSTS],
)
def test_a_burst_costs_the_turn_time_never_the_call(
    stage: str,
    fault: str,
    count: int,
    mid: bool,
    real_livekit: LiveKitServer,
    root: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from support.stage_faults import BURSTS

    from handler.registry import Registry
    from handler.sim import cloudsim

    production = config.load("production", root=REPO)
    servers = InBackground(lambda: cloudsim.running(production, Registry.load(), json.loads(PHRASES)))
    with servers as (_, fakes):
        srv = getattr(fakes, stage)

        def burst() -> None:
            srv.faults.push(*[BURSTS[fault]() for _ in range(count)])
            if mid:  # a failing service drops its open connections too
                srv.drop_connections()

        if not mid:
            servers.call(burst)
        worker = start_worker(
            **{
                config.ENV_VAR: "production",
                **PLANTED_KEYS,
                **settings_env({**fakes.overrides(), "resilience.apology": APOLOGY}),
                "HTTP_TIMEOUT": "2",
                "MAX_RETRIES": "2",
            }
        )
        caller = Caller(real_livekit, root, "three.toml", env="production")
        if mid:  # once the first reply has been synthesized whole
            caller.wait_for("turn 1:", 90)
            deadline = time.monotonic() + 30
            while not fakes.tts.stats.events["finals"] and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
            servers.call(burst)
        rc, doc, err = caller.finish(240)
        worker.wait_for_log("job ended: session and HTTP pool closed", 30)
        spoken, faulted = fakes.tts.spoken(), len(srv.faults.applied)

    log = worker.stderr
    assert faulted == count, log[-3000:]  # the burst happened, whole
    # no early end, no apology: every turn answered (some late)
    assert rc == 0 and doc is not None, err[-3000:] + log[-3000:]
    assert [t["kind"] for t in doc["turns"]] == ["turn"] * 3 and all(t["reply"] for t in doc["turns"]), doc
    assert not any(APOLOGY in text for text in spoken), spoken
    lines = json_lines(log)
    assert not [line for line in lines if line["msg"].startswith("ending the session")], log[-3000:]
    # each failed request counted on a turn line
    turns = [line for line in lines if line.get("msg") == "turn"]
    counted = sum(t.get(f"{stage}_retries", 0) + t.get(f"{stage}_errors", 0) for t in turns)
    assert counted >= count, turns
    assert all(t.get("answered") for t in turns), turns
    assert_no_secrets(log + err, real_livekit)


def test_a_reply_the_tts_cuts_short_is_reported_as_what_the_caller_heard(
    real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    from handler.fakes import Fault
    from handler.registry import Registry
    from handler.sim import cloudsim

    reply = "It is sunny and warm today, about twenty degrees."  # llm.local.replies
    full = reply.split()
    production = config.load("production", root=REPO)
    servers = InBackground(lambda: cloudsim.running(production, Registry.load(), json.loads(PHRASES)))
    with servers as (_, fakes):
        # the ElevenLabs connection drops 1.2 s into the first reply's audio (of about 3 s)
        fakes.tts.faults.push(Fault.disconnect(after=12))
        worker = start_worker(
            **{config.ENV_VAR: "production", **PLANTED_KEYS, **settings_env(fakes.overrides())}
        )
        rc, doc, err = call(real_livekit, root, "short.toml", env="production")
        worker.wait_for_log("job ended: session and HTTP pool closed", 30)

    assert rc == 0 and doc is not None, err[-3000:] + worker.stderr[-3000:]
    cut, normal = doc["turns"]
    heard = cut["reply"].split()
    # the caller's report: the first words of the sentence, never the whole of it
    assert cut["ttfa"] is not None and 0 < len(heard) < len(full), cut
    assert full[: len(heard)] == heard, cut
    assert normal["reply"] == "Your order shipped yesterday and arrives tomorrow.", normal
    # the worker's turn line: the TTS failed once; that is no interruption by the user
    first = next(line for line in json_lines(worker.stderr) if line.get("msg") == "turn")
    assert first.get("tts_errors") == 1 and not first["interrupted"], first


def test_smart_turn_holds_a_pause_mid_sentence_in_a_real_room(
    real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    from support import pauses

    # "my order number is, um," ... "four two seven": inside the hold the test gives the model
    sc = pauses.write_scenario(root, gap=pauses.GAP)
    phrases = json.dumps(
        ["my order number is", pauses.REST, f"my order number is {pauses.REST}", pauses.QUESTION]
    )
    # dev (the offline stack): the turn would end 0.5 s after the VAD's 0.5 s of silence, well
    # inside the 1.5 s pause, but for the model
    worker = start_worker(
        HANDLER_TURN__DETECTION="smart-turn", HANDLER_STT__LOCAL__PHRASES=phrases, **pauses.HELD_ENV
    )
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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_stop_signal_to_the_whole_process_group_drains_the_call_and_exits_0(
    sig: int, real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    """systemd's KillMode=control-group, `timeout` and Ctrl-C signal every process of the worker:
    the job processes (the one with the call, the idle one) and livekit's forkserver leave the stop
    to the main process, which drains."""
    drain_timeout = 60
    worker = start_worker(own_group=True, HANDLER_WORKER__DRAIN_TIMEOUT=str(drain_timeout))
    ongoing = Caller(real_livekit, root, "three.toml")
    ongoing.wait_for("turn 1: ")  # mid-call: the first reply is playing
    worker.wait_for_log("initializing process", 10, count=2)  # an idle process waits beside the call's
    t0 = time.monotonic()
    worker.signal_group(sig)
    worker.wait_for_log("draining worker", 10)

    rc, doc, err = ongoing.finish()
    assert rc == 0 and doc is not None, err[-3000:] + worker.stderr[-3000:]
    assert_answered(doc, 3)  # every turn, after the signal too
    assert worker.wait(drain_timeout, "after the drained call ended") == 0, worker.stderr[-3000:]
    assert time.monotonic() - t0 < drain_timeout
    assert "exit code" not in worker.stderr, worker.stderr[-3000:]  # no job process died of it
    assert error_lines(worker.stderr) == []


def test_a_killed_worker_is_reported_and_the_next_call_is_answered_by_the_other(
    real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    workers = [start_worker("worker-a"), start_worker("worker-b")]

    def jobs(w: WorkerProcess) -> int:
        return w.stderr.count("received job request")

    # a call under way (livekit picks the worker): kill the worker that has it
    ongoing = Caller(real_livekit, root, "orphaned.toml")
    ongoing.wait_for("turn 1: ")  # the first reply is playing
    [victim] = [w for w in workers if jobs(w) == 1]
    [bystander] = [w for w in workers if w is not victim]
    victim.kill()
    rc, doc, err = ongoing.finish()
    assert rc == 1 and "the agent left" in err, err[-3000:]
    assert doc is not None and doc["turns"][0]["ttfa"] is not None  # what happened before is reported
    assert jobs(bystander) == 0

    # the server drops a worker when its websocket closes, which a SIGKILL does at once: the next
    # call can only go to the survivor
    rc, doc, err = call(real_livekit, root, "short.toml")
    assert rc == 0 and doc is not None, err[-3000:]
    assert_answered(doc, 2)
    assert jobs(bystander) == 1
    assert error_lines(bystander.stderr) == []


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
