"""The SQL the `sqlite` and `postgres` sinks share: one table, the same migrations, the same reads.

`calls` keeps the whole record (JSON text in SQLite, JSONB in PostgreSQL) next to the columns the
`calls` command filters and sorts on. A record is inserted once: `ON CONFLICT (id) DO NOTHING`
makes a second delivery (from the spool, or by a second process) a no-op. Statements are written
with `%s` placeholders (psycopg's); the SQLite store turns them into `?`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from handler.records.record import dumps, parse_iso

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "calls table",
        """CREATE TABLE IF NOT EXISTS calls (
            id TEXT PRIMARY KEY,
            started_at DOUBLE PRECISION NOT NULL,
            ended_at DOUBLE PRECISION,
            env TEXT,
            source TEXT,
            agent_name TEXT,
            job_id TEXT,
            room TEXT,
            end_reason TEXT,
            turns INTEGER,
            record {json} NOT NULL
        )""",
    ),
    (2, "index on start time", "CREATE INDEX IF NOT EXISTS calls_started_at ON calls (started_at)"),
    (
        3,
        "index on environment and start time",
        "CREATE INDEX IF NOT EXISTS calls_env_started_at ON calls (env, started_at)",
    ),
)
"""(version, what, statement): applied in order, each once; `{json}` is the store's JSON type."""

COLUMNS = (
    "id",
    "started_at",
    "ended_at",
    "env",
    "source",
    "agent_name",
    "job_id",
    "room",
    "end_reason",
    "turns",
)


def row(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The indexed columns of a record, then the record itself (JSON text)."""
    return (
        record["id"],
        parse_iso(record["started_at"]),
        parse_iso(record["ended_at"]) if record.get("ended_at") else None,
        record.get("env"),
        record.get("source"),
        record.get("agent_name"),
        record.get("job_id"),
        record.get("room"),
        record.get("end_reason"),
        len(record.get("turns") or []),
        dumps(record),
    )


INSERT = (
    f"INSERT INTO calls ({', '.join(COLUMNS)}, record) VALUES ({', '.join(['%s'] * (len(COLUMNS) + 1))}) "
    "ON CONFLICT (id) DO NOTHING"
)


FILTERED = ("env", "end_reason", "source")
"""The columns a page of calls can be filtered on by value (and `distinct` lists the values of)."""


class SqlStore:
    """A store over a DB-API connection factory. Subclasses set `json_type`, `placeholder`,
    `faults_sql`, and implement `_connect` and `_lock_migrations` (PostgreSQL serializes two
    workers' migrations)."""

    name = "sql"
    json_type = "TEXT"
    placeholder = "%s"
    faults_sql = "json_extract(record, '$.faults') <> '{}'"
    """SQL true for a call with a fault: its totals are only in the record (a JSON query, a scan)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._migrated = False

    # -- subclass hooks ----------------------------------------------------------------------------
    def _run(self, work: Callable[[Any], Any]) -> Any:
        """Call `work(cursor)` in one transaction and return its result."""
        raise NotImplementedError

    def _lock_migrations(self, cur: Any) -> None:
        return None

    def _sql(self, statement: str) -> str:
        return statement if self.placeholder == "%s" else statement.replace("%s", self.placeholder)

    def _decode(self, value: Any) -> dict[str, Any]:
        return value if isinstance(value, dict) else json.loads(value)

    # -- schema --------------------------------------------------------------------------------------
    def migrate(self) -> str:
        def work(cur: Any) -> list[str]:
            self._lock_migrations(cur)
            cur.execute(
                "CREATE TABLE IF NOT EXISTS records_schema "
                "(version INTEGER PRIMARY KEY, applied TEXT NOT NULL)"
            )
            cur.execute("SELECT version FROM records_schema")
            done = {r[0] for r in cur.fetchall()}
            applied = []
            for version, what, statement in MIGRATIONS:
                if version in done:
                    continue
                cur.execute(statement.format(json=self.json_type))
                cur.execute(
                    self._sql("INSERT INTO records_schema (version, applied) VALUES (%s, %s)"),
                    (version, what),
                )
                applied.append(f"{version} ({what})")
            return applied

        applied = self._run(work)
        self._migrated = True
        version = MIGRATIONS[-1][0]
        if applied:
            return f"schema at version {version}: applied {', '.join(applied)}"
        return f"schema at version {version}: nothing to do"

    def _ensure_schema(self) -> None:
        if not self._migrated:
            with self._lock:
                if not self._migrated:
                    self.migrate()

    # -- writing -------------------------------------------------------------------------------------
    def write(self, record: Mapping[str, Any]) -> None:
        self._ensure_schema()
        self._run(lambda cur: cur.execute(self._sql(INSERT), row(record)))

    # -- reading -------------------------------------------------------------------------------------
    def _where(
        self, equal: Mapping[str, str] | None = None, since: float | None = None, faults: bool = False
    ) -> tuple[str, list[Any]]:
        """The WHERE clause (empty, or with its leading space) and its parameters for calls whose
        FILTERED columns equal `equal`'s values, started at or after `since`, with a fault if
        `faults`."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (equal or {}).items():
            if column not in FILTERED:
                raise ValueError(f"calls cannot be filtered on {column!r}: one of {', '.join(FILTERED)}")
            where.append(f"{column} = %s")
            params.append(value)
        if since is not None:
            where.append("started_at >= %s")
            params.append(since)
        if faults:
            where.append(self.faults_sql)
        return (" WHERE " + " AND ".join(where) if where else ""), params

    def records(
        self, *, since: float | None = None, env: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        self._ensure_schema()
        clause, params = self._where({"env": env} if env else None, since)
        sql = "SELECT record FROM calls" + clause + " ORDER BY started_at DESC"
        sql += f" LIMIT {int(limit)}" if limit else ""

        def work(cur: Any) -> list[Any]:
            cur.execute(self._sql(sql), params)
            return cur.fetchall()

        return [self._decode(r[0]) for r in self._run(work)]

    def page(
        self,
        *,
        equal: Mapping[str, str] | None = None,
        since: float | None = None,
        faults: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[int, list[dict[str, Any]]]:
        """How many calls match (`_where`), and `limit` of them from `offset`, newest first."""
        self._ensure_schema()
        clause, params = self._where(equal, since, faults)
        page = f" ORDER BY started_at DESC LIMIT {int(limit)} OFFSET {int(offset)}"

        def work(cur: Any) -> tuple[int, list[Any]]:
            cur.execute(self._sql("SELECT count(*) FROM calls" + clause), params)
            total = cur.fetchone()[0]
            cur.execute(self._sql("SELECT record FROM calls" + clause + page), params)
            return total, cur.fetchall()

        total, rows = self._run(work)
        return total, [self._decode(r[0]) for r in rows]

    def distinct(self) -> dict[str, list[str]]:
        """The values present in each FILTERED column, sorted."""
        self._ensure_schema()

        def work(cur: Any) -> dict[str, list[str]]:
            out = {}
            for column in FILTERED:
                cur.execute(f"SELECT DISTINCT {column} FROM calls WHERE {column} IS NOT NULL ORDER BY 1")
                out[column] = [r[0] for r in cur.fetchall()]
            return out

        return self._run(work)

    def window(self, since: float, env: str | None = None) -> tuple[int, float | None]:
        """How many calls started at or after `since` (in `env`), and the newest one's start: what
        changes when the window's calls do, in one indexed query."""
        self._ensure_schema()
        clause, params = self._where({"env": env} if env else None, since)

        def work(cur: Any) -> tuple[int, float | None]:
            cur.execute(self._sql("SELECT count(*), max(started_at) FROM calls" + clause), params)
            count, newest = cur.fetchone()
            return count, newest

        return self._run(work)

    def record(self, record_id: str) -> dict[str, Any] | None:
        self._ensure_schema()

        def work(cur: Any) -> list[Any]:
            cur.execute(
                self._sql("SELECT record FROM calls WHERE id LIKE %s ORDER BY started_at DESC LIMIT 2"),
                (record_id.replace("%", "") + "%",),
            )
            return cur.fetchall()

        rows = self._run(work)
        return self._decode(rows[0][0]) if len(rows) == 1 else None

    def count(self) -> int:
        self._ensure_schema()

        def work(cur: Any) -> int:
            cur.execute("SELECT count(*) FROM calls")
            return cur.fetchone()[0]

        return self._run(work)

    def prune(self, before: float) -> int:
        self._ensure_schema()

        def work(cur: Any) -> int:
            cur.execute(self._sql("DELETE FROM calls WHERE started_at < %s"), (before,))
            return cur.rowcount

        return self._run(work)
