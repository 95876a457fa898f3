"""Call records from the worker in a real room: livekit-server on 127.0.0.1, `python -m handler
start` as a user starts it, `python -m handler call` as the caller (tests/test_room.py's fixtures),
a real PostgreSQL and a real webhook receiver."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import postgres as postgres_server
from support.postgres import PostgresServer
from support.webhook_receiver import receiving
from test_room import Caller, call, root, start_worker  # noqa: F401  (fixtures: the worker, its root)

from handler.fakes.background import InBackground
from handler.fakes.livekit_server import LiveKitServer
from handler.fakes.worker_process import WorkerProcess
from handler.records.spool import Spool

pytestmark = pytest.mark.realtime

SECRET = "whsec-planted-room-0123456789abcdef"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server.for_tests() as server:
        yield server


@pytest.fixture
def database(postgres: PostgresServer) -> PostgresServer:
    return postgres_server.empty(postgres)


@dataclass
class Room:
    """A real livekit-server, the workers' directory, and how to start a worker there."""

    server: LiveKitServer
    root: Path
    start_worker: Callable[..., WorkerProcess]


@pytest.fixture
def room(real_livekit: LiveKitServer, root: Path, start_worker: Callable[..., WorkerProcess]) -> Room:  # noqa: F811
    return Room(real_livekit, root, start_worker)


def stored(cli: Any, directory: Path, store: str, dsn: str = "") -> list[dict[str, Any]]:
    """`calls list --json` as a user runs it in the worker's directory."""
    env = {"ENV_FOR_DYNACONF": "dev", "VOICE_HANDLER_ROOT": str(directory), "RECORDS_POSTGRES_DSN": dsn}
    done = cli("calls", "list", "--json", "--store", store, env=env, cwd=directory)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_real_room_call_leaves_one_record_with_every_turn_in_sqlite_and_postgres(
    room: Room, database: PostgresServer, cli: Any
) -> None:
    worker = room.start_worker(
        HANDLER_RECORDS__SINKS='["sqlite", "postgres"]', RECORDS_POSTGRES_DSN=database.dsn
    )
    rc, doc, err = call(room.server, room.root, "qa")
    assert rc == 0 and doc is not None, err[-3000:]
    worker.wait_for_log("job ended: session and HTTP pool closed", 30)
    in_sqlite = stored(cli, room.root, "sqlite")
    assert len(in_sqlite) == 1, in_sqlite
    record = in_sqlite[0]
    assert record["source"] == "start" and record["job_id"] and record["room"].startswith("sha256:")
    assert len(record["turns"]) == len(doc["turns"]) == 4
    assert all(t["answered"] and t["ttfa"] for t in record["turns"]), record["turns"]
    assert [e["turn"] for e in record["transcript"] if e["role"] == "user"] == [1, 2, 3, 4]
    assert record["end_reason"] == "caller_left", record["end_detail"]
    assert record["usage"]["stt_audio_seconds"] > 0 and record["usage"]["llm_output_tokens"] > 0
    assert stored(cli, room.root, "postgres", database.dsn) == in_sqlite
    assert database.dsn not in worker.stderr


def test_a_sigtermed_worker_spools_what_the_webhook_did_not_take_and_the_next_start_delivers_it(
    room: Room, cli: Any
) -> None:
    sinks = {
        "HANDLER_RECORDS__SINKS": '["sqlite", "webhook"]',
        "RECORDS_WEBHOOK_SECRET": SECRET,
        "HANDLER_RETRY__MAX_RETRIES": "1",
        "HANDLER_RECORDS__FLUSH_TIMEOUT": "5",
        "HANDLER_RECORDS__RETRY_INTERVAL": "1",
    }
    with InBackground(lambda: receiving(SECRET, statuses=[503] * 1000)) as down:
        worker = room.start_worker(HANDLER_RECORDS__WEBHOOK__URL=down.url, **sinks)
        ongoing = Caller(room.server, room.root, "short.toml")
        ongoing.wait_for("turn 1: ")  # mid-call
        worker.proc.send_signal(15)
        rc, doc, err = ongoing.finish()
        assert rc == 0, err[-3000:]
        assert worker.wait(60, "after the drained call ended") == 0, worker.stderr[-3000:]
    (record,) = stored(cli, room.root, "sqlite")
    spool = Spool(room.root / ".voice-handler")
    assert [p.stem for p in spool.pending("webhook")] == [record["id"]]
    assert not down.accepted
    with InBackground(lambda: receiving(SECRET)) as back:
        room.start_worker("worker-again", HANDLER_RECORDS__WEBHOOK__URL=back.url, **sinks)
        deadline = time.monotonic() + 30
        while not back.accepted and time.monotonic() < deadline:
            time.sleep(0.2)
    assert list(back.accepted) == [record["id"]] and back.rejected == 0
    assert back.accepted[record["id"]] == record
    assert spool.pending("webhook") == []


def test_two_workers_write_their_calls_into_one_postgres(
    room: Room, database: PostgresServer, cli: Any
) -> None:
    # an empty database: both workers migrate it at their first record
    sinks = {"HANDLER_RECORDS__SINKS": '["postgres"]', "RECORDS_POSTGRES_DSN": database.dsn}
    workers = [room.start_worker("worker-a", **sinks), room.start_worker("worker-b", **sinks)]
    callers = [Caller(room.server, room.root, "short.toml") for _ in range(2)]
    for c in callers:
        rc, _, err = c.finish()
        assert rc == 0, err[-3000:]
    deadline = time.monotonic() + 30
    while len(stored(cli, room.root, "postgres", database.dsn)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    calls = stored(cli, room.root, "postgres", database.dsn)
    assert len(calls) == 2 and len({c["job_id"] for c in calls}) == 2, calls
    assert all(len(c["turns"]) == 2 for c in calls)
    assert all(" ERROR " not in w.stderr for w in workers)
