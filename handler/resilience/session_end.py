"""A conversation driver (simulate, a test) must stop when the session ends under it: livekit
closes a session after unrecoverable errors and our decider ends one whose stage is down; a
driver still feeding audio into a closed session waits forever (issue 14's `simulate` hang)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from handler.resilience.ledger import ledger_of


def close_reason(session: Any, ev: Any) -> str:
    """Why the session closed: our decision when there was one, else livekit's reason and error."""
    ledger = ledger_of(session)
    if ledger is not None and ledger.ended:
        return ledger.ended
    error = getattr(ev, "error", None)
    cause = getattr(error, "error", error)
    reason = getattr(getattr(ev, "reason", None), "value", "closed")
    return f"session closed ({reason})" + (f": {type(cause).__name__}: {cause}" if cause else "")


async def run_until_closed(driver: Awaitable[Any], session: Any) -> str | None:
    """Run `driver` until it finishes or the session closes (then it is cancelled). Returns why
    the session closed first, or None when the driver finished."""
    closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_close(ev: Any) -> None:
        if not closed.done():
            closed.set_result(close_reason(session, ev))

    session.on("close", on_close)
    task = asyncio.ensure_future(driver)
    try:
        await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        session.off("close", on_close)
    if task.done():
        task.result()  # the driver's own errors are bugs: let them show
        return None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return closed.result()
