"""The `postgres` records sink against a real PostgreSQL (Debian's server, started by the fixture on
127.0.0.1 and a unix socket): migrations, reading like SQLite, a secret DSN, and the server taken
away for a minute under a stream of records."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support import call_records
from support import postgres as postgres_server
from support.postgres import PostgresServer

from handler import config
from handler.records import record as records
from handler.records import writer
from handler.records.spool import Spool
from handler.registry import Registry

DOWN_FOR = 60.0
"""s PostgreSQL stays stopped while records keep coming (the issue's fault)."""


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server.for_tests() as server:
        yield server


@pytest.fixture
def database(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresServer]:
    """The server, running and with an empty `calls` table; the DSN in the environment."""
    postgres_server.empty(postgres)
    monkeypatch.setenv("RECORDS_POSTGRES_DSN", postgres.dsn)
    writer.close(0)
    yield postgres
    writer.close(0)


def load(**overrides: Any) -> tuple[config.Settings, Registry]:
    settings = config.load().with_overrides({"records.sinks": ["sqlite", "postgres"], **overrides}, "test")
    return settings, Registry.load()


def synthetic(settings: config.Settings, registry: Registry) -> dict[str, Any]:
    from handler.pipeline.turns import TurnRecord, summarize

    turns = [TurnRecord(n=i, user_stopped_at=time.time(), ttfa=0.8 + i / 10) for i in (1, 2)]
    return records.build(
        settings=settings,
        registry=registry,
        info={"simulation": "qa"},
        started_at=time.time() - 20,
        ended_at=time.time(),
        turns=turns,
        summary=summarize(turns, 0.3),
        history=[],
        usage=None,
        detail=None,
        stage_down=False,
    )


def count(dsn: str) -> tuple[int, int]:
    """(rows, distinct ids) in `calls`."""
    with psycopg.connect(dsn) as conn:
        try:
            return conn.execute("SELECT count(*), count(DISTINCT id) FROM calls").fetchone()  # type: ignore[return-value]
        except psycopg.errors.UndefinedTable:  # nothing written yet
            return (0, 0)


def test_migrate_is_idempotent_and_calls_reads_postgres_as_it_reads_sqlite(
    root: Path, database: PostgresServer, cli: Any
) -> None:
    (root / "settings.toml").write_text('[default.records]\nsinks = ["sqlite", "postgres"]\n')
    first = cli("calls", "migrate", cwd=root)
    assert first.returncode == 0, first.stderr
    assert (
        "applied 1 (calls table), 2 (index on start time), 3 (index on environment and start time)"
        in first.stdout
    )
    again = cli("calls", "migrate", cwd=root)
    assert again.returncode == 0 and again.stdout.count("nothing to do") == 2, again.stdout
    settings, registry = load()
    out = writer.ensure(settings, registry)
    docs = [synthetic(settings, registry) for _ in range(3)]
    for d in docs:
        out.submit(d)
    assert writer.close(10) == {"sqlite": 0, "postgres": 0}
    listed = {
        store: json.loads(cli("calls", "list", "--json", "--store", store, cwd=root).stdout)
        for store in ("sqlite", "postgres")
    }
    assert listed["postgres"] == listed["sqlite"]
    assert {r["id"] for r in listed["postgres"]} == {d["id"] for d in docs}
    stats = json.loads(cli("calls", "stats", "--json", "--store", "postgres", cwd=root).stdout)
    assert stats["calls"] == 3 and stats["turns"] == 6
    shown = cli("calls", "show", docs[0]["id"], "--store", "postgres", cwd=root)
    assert shown.returncode == 0 and "turn 2" in shown.stdout


def test_the_web_list_reads_postgres_as_it_reads_sqlite(tmp_path: Path, database: PostgresServer) -> None:
    """The store's public reads (a page with every filter, the filters' values, a window's state)
    give the same answers from both stores: the faults filter is a JSON query, different in each."""
    from handler.web.calls import CallsReader, Filters
    from handler_plugins.records_postgres import PostgresStore
    from handler_plugins.records_sqlite import SqliteStore

    now = 1_796_000_000.0
    calls = call_records.many(120, now, 3 * 86400, seed=5)
    stores = [
        SqliteStore(tmp_path / "calls.db"),
        PostgresStore(database.dsn, pool_min=1, pool_max=2, timeout=5),
    ]
    try:
        readers = []
        for store in stores:
            call_records.fill(store, calls)
            readers.append(CallsReader(store))
        for filters in (
            Filters(),
            Filters(faults=True),
            Filters(env="production", since="24h"),
            Filters(end_reason="caller_left", faults=True),
        ):
            sqlite, postgres = (r.page(filters, 2, 20, now=now) for r in readers)
            assert postgres == sqlite and sqlite["total"] > 0, filters
        assert readers[1].choices() == readers[0].choices()
        assert stores[1].window(now - 86400, "production") == stores[0].window(now - 86400, "production")
        faulty = readers[1].page(Filters(faults=True), 1, 200, now=now)
        assert faulty["total"] == sum(bool(c["faults"]) for c in calls) > 0
    finally:
        for store in stores:
            store.close()


def test_the_dsn_is_never_printed_when_the_store_cannot_be_reached(
    root: Path, database: PostgresServer, cli: Any
) -> None:
    (root / "settings.toml").write_text('[default.records]\nsinks = ["postgres"]\n')
    unreachable = f"postgresql://app:s3cretpw@127.0.0.1:{database.port + 1}/postgres?connect_timeout=2"
    (root / "settings.toml").write_text(
        '[default.records]\nsinks = ["postgres"]\n[default.records.postgres]\nconnect_timeout = 2.0\n'
    )
    done = cli("calls", "list", env={"RECORDS_POSTGRES_DSN": unreachable}, cwd=root)
    assert done.returncode == 1
    assert "cannot read the postgres store 127.0.0.1" in done.stderr and "Traceback" not in done.stderr
    assert "s3cretpw" not in done.stderr + done.stdout


def test_postgres_stopped_for_a_minute_under_a_stream_of_calls_ends_with_each_record_once(
    root: Path, database: PostgresServer
) -> None:
    settings, registry = load(
        **{
            "records.sinks": ["postgres"],
            "records.retry_interval": 2.0,
            "records.postgres.connect_timeout": 1.0,
        }
    )
    out = writer.ensure(settings, registry)
    sent: list[str] = []

    def call() -> None:
        doc = synthetic(settings, registry)
        sent.append(doc["id"])
        out.submit(doc)

    for _ in range(4):
        call()
    database.stop()
    stopped = time.monotonic()
    while time.monotonic() - stopped < DOWN_FOR:  # calls keep ending while it is down
        call()
        time.sleep(5)
    assert Spool(writer.directory(settings)).count("postgres") > 0
    database.start()
    for _ in range(4):
        call()
    deadline = time.monotonic() + 60
    while count(database.dsn)[0] < len(sent) and time.monotonic() < deadline:
        time.sleep(0.5)
    writer.close(10)
    assert count(database.dsn) == (len(sent), len(sent))
    with psycopg.connect(database.dsn) as conn:
        stored = {r[0] for r in conn.execute("SELECT id FROM calls")}
    assert stored == set(sent)
    assert Spool(writer.directory(settings)).count("postgres") == 0
