"""Observer `records`: builds each call's record from the lifecycle hooks and hands it to the
process's writer when the session ends (the writer's threads deliver it; nothing here waits).

The call is followed by the hooks' `info` mapping (the same object from `session_started` to
`session_ended`). Besides the ids, `info` may carry `source` ("start", "simulate", "bench") and
`ended` (why the job or command ended the session), which the worker and the commands set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from handler.hookspecs import hookimpl
from handler.records import record as records
from handler.records import writer

logger = logging.getLogger("handler.records")


@dataclass
class _Call:
    session: Any
    settings: Any
    started_at: float = field(default_factory=time.time)
    turns: list[Any] = field(default_factory=list)
    summary: Any = None


_calls: dict[int, _Call] = {}


@hookimpl(trylast=True)
def session_started(session: Any, settings: Any, info: Mapping[str, Any]) -> None:
    if writer.current() is not None:  # `handler.session.observe` starts it when records are on
        _calls[id(info)] = _Call(session, settings)


@hookimpl(trylast=True)
def turn_completed(record: Any, info: Mapping[str, Any]) -> None:
    if (call := _calls.get(id(info))) is not None:
        call.turns.append(record)


@hookimpl(trylast=True)
def session_summary(summary: Any, info: Mapping[str, Any]) -> None:
    if (call := _calls.get(id(info))) is not None:
        call.summary = summary


@hookimpl(trylast=True)
def session_ended(session: Any, settings: Any, info: Mapping[str, Any]) -> None:
    call = _calls.pop(id(info), None)
    out = writer.current()
    if call is None or out is None:
        return
    from handler.resilience.ledger import ledger_of

    ledger = ledger_of(session)
    detail = (ledger.ended if ledger is not None else None) or info.get("ended")
    doc = records.build(
        settings=settings,
        registry=out.registry,
        info=info,
        started_at=call.started_at,
        ended_at=time.time(),
        turns=call.turns,
        summary=call.summary,
        history=getattr(getattr(session, "history", None), "items", []),
        usage=getattr(session, "usage", None),
        detail=detail,
        stage_down=bool(ledger is not None and ledger.ended),
    )
    out.submit(doc)
    # the id only: a record's content (the transcript) never goes to the logs at INFO
    logger.info("call record %s: %d turns, %s", doc["id"], len(doc["turns"]), doc["end_reason"])
