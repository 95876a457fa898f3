"""Records sink `postgres`: a fleet of workers writing into one PostgreSQL (psycopg 3).

The DSN is a secret (`RECORDS_POSTGRES_DSN`, from the environment, .env or .secrets.toml), never
printed: messages name the host and database only. A pool of `pool_min`..`pool_max` connections
per process, opened on the writer's thread at the first write; the schema is migrated then
(idempotent, and serialized between workers by an advisory lock), or ahead of time by
`python -m handler calls migrate`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from handler.api import RECORDS_DSN_VAR as DSN_VAR
from handler.api import Register, Runtime, SinkConfigError, SqlStore, hookimpl, table

MIGRATION_LOCK = 7_210_021
"""The advisory lock id two workers migrating at once take in turn (any constant unique to us)."""


OPTIONS = """\
# the DSN is a secret: RECORDS_POSTGRES_DSN in the environment, .env or .secrets.toml (postgresql://user:pass@host/db)
pool_min = 1                           # connections the pool keeps open
pool_max = 4                           # connections the pool opens at most (per process)
connect_timeout = 5.0                  # s to connect before the record is spooled
"""
"""`[records.postgres]`: this sink's options, their defaults and why. The lowest layer of the table:
every settings file changes them; `config show` lists them, labelled with this plugin."""


@hookimpl(trylast=True)
def register_providers(register: Register) -> None:
    register(
        "records",
        "postgres",
        build,
        secrets=(DSN_VAR,),
        validate=_problems,
        preload=("psycopg",),
        **table(OPTIONS),
    )


def _problems(options: Mapping[str, Any]) -> list[str]:
    out = []
    if options["pool_min"] < 1 or options["pool_max"] < options["pool_min"]:
        out.append(f"pool_max: must be at least pool_min ({options['pool_min']}), and pool_min at least 1")
    if options["connect_timeout"] <= 0:
        out.append("connect_timeout: must be more than 0")
    return out


def where(dsn: str) -> str:
    """host:port/dbname of a DSN, for messages (no user, no password)."""
    import psycopg

    d = psycopg.conninfo.conninfo_to_dict(dsn)
    return f"{d.get('host', 'localhost')}:{d.get('port', 5432)}/{d.get('dbname', '')}"


def build(options: Mapping[str, Any], runtime: Runtime) -> PostgresStore:
    dsn = runtime.secret(DSN_VAR)
    if not dsn:
        raise SinkConfigError(f"records sink postgres needs {DSN_VAR} (environment, .env or .secrets.toml)")
    return PostgresStore(
        dsn, pool_min=options["pool_min"], pool_max=options["pool_max"], timeout=options["connect_timeout"]
    )


class PostgresStore(SqlStore):
    name = "postgres"
    json_type = "JSONB"
    placeholder = "%s"
    faults_sql = "record->'faults' <> '{}'::jsonb"

    def __init__(self, dsn: str, *, pool_min: int, pool_max: int, timeout: float) -> None:
        super().__init__()
        self._dsn = dsn
        self.pool_min, self.pool_max, self.timeout = pool_min, pool_max, timeout
        self._pool: Any = None

    def __repr__(self) -> str:  # never the DSN
        return f"postgres store {where(self._dsn)}"

    def _get_pool(self) -> Any:
        if self._pool is None:
            from psycopg_pool import ConnectionPool

            # the pool's own reconnect warnings carry libpq's message, which names host and port only
            logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
            self._pool = ConnectionPool(
                self._dsn,
                min_size=self.pool_min,
                max_size=self.pool_max,
                timeout=self.timeout,
                kwargs={"connect_timeout": max(1, round(self.timeout))},
                open=True,
                name="voice-handler-records",
            )
        return self._pool

    def _run(self, work: Callable[[Any], Any]) -> Any:
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._get_pool().connection() as conn, conn.transaction(), conn.cursor() as cur:
                return work(cur)
        except (psycopg.OperationalError, PoolTimeout):
            # the server went away: a new pool connects at the next attempt, where the old one's
            # reconnection backs off (up to minutes) and would keep a server that is back unused
            self.close()
            raise

    def _lock_migrations(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=1.0)
