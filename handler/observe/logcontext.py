"""Ids that every log line of a session carries (session, job, room), via a context variable, and
the structured fields a record may carry (`extra={"fields": {...}}`)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

_ids: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "voice_handler_ids", default=MappingProxyType({})
)


def current_ids() -> Mapping[str, str]:
    return _ids.get()


@contextmanager
def bound(**ids: str) -> Iterator[None]:
    """Attach ids to every log record emitted in this context (tasks started inside inherit it)."""
    token = _ids.set({**_ids.get(), **ids})
    try:
        yield
    finally:
        _ids.reset(token)


def bind(**ids: str) -> None:
    """Attach ids for the rest of the current context (a job process runs one session)."""
    _ids.set({**_ids.get(), **ids})


def job_ids(job: Any) -> dict[str, str]:
    """The ids a livekit job's log lines carry (`job` is `JobContext.job`, a protocol `Job`)."""
    return {"job": job.id, "room": job.room.name}


def fields(**values: Any) -> dict[str, Any]:
    """`logger.info("turn", extra=fields(n=1, ttfa_ms=900))`: structured values for formatters."""
    return {"fields": values}
