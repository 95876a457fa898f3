"""A real PostgreSQL for the tests and benchmarks: Debian's server binaries, a throwaway cluster.

`initdb` and `postgres` refuse to run as root (the sessions and CI run as root), so as root the
cluster's directory is handed to the `postgres` system user and the binaries run under `runuser`.
It listens on 127.0.0.1 on a free port and on a unix socket in its own directory only; trust
authentication (loopback, a throwaway cluster). `stop()` and `start()` can be called again (the
tests take the server away under a writer and bring it back).

Install: `apt-get update && apt-get install -y postgresql` (.ci/run does on a fresh machine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INSTALL = "apt-get update && apt-get install -y postgresql"
USER = "app"
DATABASE = "postgres"


def bindir() -> Path | None:
    """The newest Debian PostgreSQL's bin directory, or the one on PATH, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, directory: Path, bin_dir: Path | None = None) -> None:
        self.bin = bin_dir or bindir()
        if self.bin is None:
            raise FileNotFoundError(f"PostgreSQL is not installed: {INSTALL}")
        self.dir = Path(directory)
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = _free_port()
        self._as_root = os.geteuid() == 0

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip()}\n{log}")

    def init(self) -> PostgresServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "--no-sync")
        return self

    def start(self) -> PostgresServer:
        options = f"-k {self.dir} -h 127.0.0.1 -p {self.port} -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def __enter__(self) -> PostgresServer:
        return self.init().start()

    def __exit__(self, *exc: object) -> None:
        if self.running():
            self.stop()


@contextmanager
def for_tests() -> Iterator[PostgresServer]:
    """A running server for a test module; without PostgreSQL installed the test is skipped with
    how to install it, or fails under CI=true (CI installs it: its absence is a broken set-up)."""
    import pytest

    if bindir() is None:
        message = f"PostgreSQL is not installed: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # not under pytest's tmp_path: its parents are root's alone, and the server runs as `postgres`
    directory = Path(tempfile.mkdtemp(prefix="voice-handler-pg-"))
    try:
        with PostgresServer(directory) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def empty(server: PostgresServer) -> PostgresServer:
    """The server running, without the records' tables (each test starts from nothing)."""
    import psycopg

    if not server.running():
        server.start()
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS calls, records_schema")
    return server
