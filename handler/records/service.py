"""The worker's own part in the call records (its main process, which takes no calls itself):
delivering what the spool holds, from the moment `start` runs (records a previous run could not
deliver, or that a job process spooled as it ended), and applying `records.retention_days`."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from handler.records import writer
from handler.records.sinks import Store

logger = logging.getLogger("handler.records")

RETENTION_EVERY = 3600.0
"""s between two prunes of the stores (the first right at start)."""


def start(settings: Any, registry: Any) -> writer.RecordWriter | None:
    """The main process's writer (its sink threads deliver the spool at once and every
    `records.retry_interval`), and the retention thread when `records.retention_days` is set."""
    if not settings.get("records.sinks"):
        return None
    out = writer.ensure(settings, registry)
    days = settings.get("records.retention_days")
    if days:
        stores = [w.sink for w in out.workers if isinstance(w.sink, Store)]
        threading.Thread(
            target=_retention, args=(stores, days), name="records-retention", daemon=True
        ).start()
    return out


def _retention(stores: list[Any], days: float) -> None:
    while True:
        before = time.time() - days * 86400
        for store in stores:
            try:
                if n := store.prune(before):
                    logger.info("records: %d calls older than %s days pruned from the %r", n, days, store)
            except Exception as e:  # a store that is down now is pruned next time
                logger.warning("records: pruning the %r failed: %s", store, e)
        time.sleep(RETENTION_EVERY)
