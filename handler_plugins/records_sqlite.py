"""Records sink `sqlite`: the embedded default, a file under `records.directory` in WAL mode.

On in every environment, so the call `python -m handler simulate` just ran is in
`python -m handler calls list`. One connection per process, opened on the writer's thread at the
first write (never on a session's event loop); WAL lets `calls` read while a worker writes, and
several processes (a worker's job processes) write one file, each waiting its turn up to
BUSY_TIMEOUT.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from handler.api import Register, Runtime, SqlStore, hookimpl, table
from handler.api import records_directory as directory

BUSY_TIMEOUT = 10.0
"""s a write waits for another process's transaction on the same file."""


OPTIONS = """\
file = "calls.db"                      # the database file, under records.directory (WAL mode)
"""
"""`[records.sqlite]`: this sink's options, their defaults and why. The lowest layer of the table:
every settings file changes them; `config show` lists them, labelled with this plugin."""


@hookimpl(trylast=True)
def register_providers(register: Register) -> None:
    register("records", "sqlite", build, validate=_problems, **table(OPTIONS))


def _problems(options: Mapping[str, Any]) -> list[str]:
    file = options.get("file", "")
    if not file or "/" in file or file in (".", ".."):
        return ["file: must be a file name (it lives under records.directory)"]
    return []


def build(options: Mapping[str, Any], runtime: Runtime) -> SqliteStore:
    return SqliteStore(directory(runtime.settings) / options["file"])


class SqliteStore(SqlStore):
    name = "sqlite"
    json_type = "TEXT"
    placeholder = "?"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._conn_lock = threading.RLock()  # the writer's thread and a reader share the connection

    def __repr__(self) -> str:
        return f"sqlite store {self.path}"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            self._conn = conn
        return self._conn

    def _run(self, work: Callable[[Any], Any]) -> Any:
        with self._conn_lock:
            conn = self._connection()
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                result = work(cur)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
            return result

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
