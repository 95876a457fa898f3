"""What a `records` provider returns: a sink the writer thread hands each record to.

A sink's `write` runs on the writer's own thread, never on a session's event loop, and may block
(a database round trip, an HTTP POST with its retries). It must be idempotent by the record's
`id`: a record can reach it twice (spooled by one process, delivered by two), and the second
delivery must change nothing. It raises on failure; the writer then spools the record.

A sink that can also be read (`sqlite`, `postgres`) implements `Store`, which `python -m handler
calls` uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


class Sink(Protocol):
    name: str

    def write(self, record: Mapping[str, Any]) -> None:
        """Deliver one record (blocking is fine); a second delivery of the same `id` is a no-op."""

    def close(self) -> None: ...


@runtime_checkable
class Store(Protocol):
    """A sink whose records can be read back (the `calls` command)."""

    def migrate(self) -> str:
        """Create or update the schema; idempotent. Returns what it did, in one line."""

    def records(
        self, *, since: float | None = None, env: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Records newest first, started at or after `since` (epoch s), of one environment."""

    def record(self, record_id: str) -> dict[str, Any] | None:
        """One record by its id or a unique prefix of it (None when there is none)."""

    def page(
        self,
        *,
        equal: Mapping[str, str] | None = None,
        since: float | None = None,
        faults: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[int, list[dict[str, Any]]]:
        """How many records match, and `limit` of them from `offset`, newest first (the web list)."""

    def distinct(self) -> dict[str, list[str]]:
        """The values present of each column a page can be filtered on."""

    def window(self, since: float, env: str | None = None) -> tuple[int, float | None]:
        """How many records started at or after `since`, and the newest one's start."""

    def prune(self, before: float) -> int:
        """Delete records that started before `before` (epoch s); returns how many."""

    def close(self) -> None: ...


READABLE = ("sqlite", "postgres")
"""The built-in sinks that are stores: the `calls` command and the web pages read from them."""


class SinkConfigError(Exception):
    """A sink cannot be built from its configuration (the message names the key)."""
