"""The durable local spool: records a sink has not taken yet, one file each, per sink.

`<directory>/spool/<sink>/<record id>.json`. A record counts as taken only once its file is written,
fsynced, renamed into place and the directory fsynced: a crash (SIGKILL, power) after `put`
returns cannot lose it. Several processes (a worker's job processes, the next start) may deliver
from one spool at once; sinks are idempotent by record id, so a record two of them deliver is
stored once, and the file is removed by whichever finishes first.

A file that does not parse (truncated by a full disk or a crash of a filesystem without ordered
writes) is moved aside to `<name>.bad` with one error naming it; the rest are still delivered.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from handler.records.record import dumps

BAD_SUFFIX = ".bad"


class SpoolFileError(Exception):
    """A spooled file cannot be read back; the message names it."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"spool file {path} is unreadable ({why}); moved to {path.name}{BAD_SUFFIX}")
        self.path = path


class Spool:
    def __init__(self, directory: Path) -> None:
        self.root = Path(directory) / "spool"

    def _dir(self, sink: str) -> Path:
        return self.root / sink

    def put(self, sink: str, record: Mapping[str, Any]) -> Path:
        """Write `record` for `sink` durably; returns its file."""
        folder = self._dir(sink)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{record['id']}.json"
        tmp = folder / f".{record['id']}.{os.getpid()}.tmp"
        data = dumps(record).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(folder)
        return path

    def pending(self, sink: str) -> list[Path]:
        """The sink's spooled files, oldest first."""
        folder = self._dir(sink)
        if not folder.is_dir():
            return []
        files = []
        for p in folder.glob("*.json"):
            try:
                files.append((p.stat().st_mtime, p))
            except FileNotFoundError:  # delivered by another process meanwhile
                continue
        return [p for _, p in sorted(files)]

    def count(self, sink: str | None = None) -> int:
        sinks = [sink] if sink else [p.name for p in self.root.iterdir()] if self.root.is_dir() else []
        return sum(len(self.pending(s)) for s in sinks)

    def read(self, path: Path) -> dict[str, Any] | None:
        """The record in `path`; None when another process delivered it first. A file that does
        not hold a whole record is moved aside and SpoolFileError says which."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or "id" not in record:
                raise ValueError("not a call record")
        except (ValueError, UnicodeDecodeError) as e:
            with contextlib.suppress(FileNotFoundError):
                path.replace(path.with_name(path.name + BAD_SUFFIX))
            raise SpoolFileError(path, f"{len(raw)} bytes: {e}") from None
        return record

    def done(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def items(self, sink: str) -> Iterator[tuple[Path, dict[str, Any] | SpoolFileError]]:
        """(file, record) for each spooled record of `sink`, oldest first; an unreadable file
        yields its error in place of the record (already moved aside)."""
        for path in self.pending(sink):
            try:
                record = self.read(path)
            except SpoolFileError as e:
                yield path, e
                continue
            if record is not None:
                yield path, record


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
