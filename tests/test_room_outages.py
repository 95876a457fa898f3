"""A worker whose livekit-server goes away: restarted while the worker is idle, restarted during a
call, paused mid-call, gone for good. Each test has a livekit-server of its own (the suite's
shared one must not restart under other tests), restarted on the same port with the same keys.

Real-time, like tests/test_room.py (whose fixtures and caller these reuse); assertions are
invariants and generous bounds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import test_room
from test_room import SHORT, Caller, assert_answered, call, error_lines

from handler.fakes import livekit_server
from handler.fakes.livekit_server import LiveKitServer
from handler.fakes.worker_process import WorkerProcess

pytestmark = pytest.mark.realtime

root = test_room.root
start_worker = test_room.start_worker
"""test_room's fixtures: the scenarios' directory; workers registered with `real_livekit` (this
module's own server)."""

REREGISTER_WITHIN = 10.0
"""The target: back with a restarted server within this long (livekit's retries are 0, 2, 4 ... s apart)."""
JOB_END_TIMEOUT = 60.0
GAP = SHORT.replace('say = "where is my order"', 'say = "where is my order"\npause = 10.0')
"""`short` with 10 s of silence before its second question: a window mid-call in which the server
can stall without eating the caller's words."""


@pytest.fixture
def real_livekit(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LiveKitServer]:
    """A server for this test alone (overrides the suite's shared one for test_room's fixtures)."""
    binary = livekit_server.find()
    if binary is None:
        pytest.skip(f"livekit-server is not installed: run `{livekit_server.INSTALL_COMMAND}`")
    workdir = tmp_path / "livekit-server"
    workdir.mkdir()
    with LiveKitServer(binary, workdir) as server:
        yield server
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"--- livekit-server log ---\n{server.log()[-6000:]}")


def registrations(worker: WorkerProcess) -> int:
    return worker.stderr.count("registered worker")


def wait_registered_again(worker: WorkerProcess, before: int, since: float) -> float:
    """Seconds from `since` until the worker registered again."""
    worker.wait_for_log("registered worker", REREGISTER_WITHIN + 20, count=before + 1)
    return time.monotonic() - since


def test_a_server_restarted_while_the_worker_is_idle_gets_it_back_and_the_next_call_answered(
    real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker()
    before = registrations(worker)
    real_livekit.restart(down=1.0)
    back = wait_registered_again(worker, before, time.monotonic())
    assert back < REREGISTER_WITHIN, worker.stderr[-3000:]
    rc, doc, err = call(real_livekit, root, "short.toml")
    assert rc == 0 and doc is not None, err[-3000:] + worker.stderr[-3000:]
    assert_answered(doc, 2)
    # the loss and the return are said once each, as warnings, not errors
    assert worker.stderr.count("lost the connection to livekit-server") == 1, worker.stderr[-3000:]
    assert "again," in worker.stderr
    assert error_lines(worker.stderr) == []


@pytest.mark.parametrize("down", [1.0, 8.0], ids=["back-at-once", "down-8s"])
def test_a_server_restarted_during_a_call_ends_the_job_cleanly_and_the_next_call_is_answered(
    down: float,
    real_livekit: LiveKitServer,
    root: Path,
    start_worker: Callable[..., WorkerProcess],
    cli: Any,
) -> None:
    worker = start_worker(HANDLER_RECORDS__SINKS='["sqlite"]')
    before = registrations(worker)
    lost = Caller(real_livekit, root, "three.toml")
    lost.wait_for("turn 1: ")  # mid-call: the first reply is playing
    real_livekit.restart(down=down)
    # the call ends one way or another: the caller lost the room; or both sides got a room of that
    # name back from the restarted server (livekit's clients rejoin) and the caller gave up or went
    # on; the report is not what this test is about
    lost.finish()
    # the job ended: session closed, HTTP pool returned
    worker.wait_for_log("job ended: session and HTTP pool closed", JOB_END_TIMEOUT)
    wait_registered_again(worker, before, time.monotonic())

    rc, doc, err = call(real_livekit, root, "short.toml")
    assert rc == 0 and doc is not None, err[-3000:] + worker.stderr[-3000:]
    assert_answered(doc, 2)
    # no ERROR but, if the agent's client could not get the room back, one line saying so
    errors = error_lines(worker.stderr)
    assert len(errors) <= 1 and all("lost the room" in e for e in errors), "\n".join(errors)
    if down > 5:  # longer than livekit's client tries to get a room back: the call lost it, said once
        assert len(errors) == 1, worker.stderr[-3000:]
    # both calls were recorded; the one that lost its room as ended by an error
    worker.wait_for_log("job ended: session and HTTP pool closed", JOB_END_TIMEOUT, count=2)
    env = {"ENV_FOR_DYNACONF": "dev", "VOICE_HANDLER_ROOT": str(root)}
    listed = cli("calls", "list", "--json", "--store", "sqlite", env=env, cwd=root)
    assert listed.returncode == 0, listed.stderr
    records = sorted(json.loads(listed.stdout), key=lambda r: r["started_at"])
    assert len(records) == 2, records
    if errors:
        assert records[0]["end_reason"] == "error", records[0]


def test_a_server_paused_for_5_s_mid_call_lets_the_call_go_on(
    real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    (root / "gap.toml").write_text(GAP)
    worker = start_worker()
    ongoing = Caller(real_livekit, root, "gap.toml")
    ongoing.wait_for("turn 1: ")
    time.sleep(4.0)  # the first reply (about 3 s) has played: the caller is silent for 10 s
    real_livekit.pause()
    try:
        time.sleep(5.0)
    finally:
        real_livekit.resume()
    rc, doc, err = ongoing.finish()
    assert rc == 0 and doc is not None, err[-3000:] + worker.stderr[-3000:]
    assert_answered(doc, 2)
    worker.wait_for_log("job ended: session and HTTP pool closed", JOB_END_TIMEOUT)
    assert error_lines(worker.stderr) == []


@pytest.mark.parametrize("how", ["gives-up", "sigterm"])
def test_a_server_gone_for_good_is_retried_reported_and_given_up_on(
    how: str, real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    give_up = 20
    worker = start_worker(HANDLER_WORKER__RECONNECT_GIVE_UP=str(give_up))
    real_livekit.end_process()
    t0 = time.monotonic()
    worker.wait_for_log("lost the connection to livekit-server", 10)
    if how == "sigterm":  # a stop while it retries: a clean stop
        time.sleep(3.0)
        rc, _ = worker.terminate(30)
        assert rc == 0, worker.stderr[-3000:]
        return
    rc = worker.wait(give_up + 40, "after the server went for good")
    took = time.monotonic() - t0
    assert rc == 1, worker.stderr[-3000:]
    # it kept trying for the configured time (livekit's attempts spanning it), not forever
    assert give_up * 0.8 < took < give_up + 40, took
    # said once when lost; within 20 s, no "still unreachable" line (one a minute)
    assert worker.stderr.count("lost the connection to livekit-server") == 1
    assert worker.stderr.count("failed to connect to livekit, retrying") == 0
    assert "failed to connect to livekit after" in worker.stderr
