"""Reading the call records (issue 21's store, docs/records.md) for the Calls pages: a page of the
list with its filters, one call, and the key metrics per time bucket.

The list is one indexed query for the page's rows (`ORDER BY started_at DESC LIMIT/OFFSET` on the
store's started_at index, filters on its columns) and one count; only the page's records are
decoded, for their TTFA p50 and faults. The store is the first readable sink of `records.sinks`
(sqlite by default), as for `python -m handler calls`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handler.records.record import parse_iso
from handler.records.stats import fault_total, flat, stats

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
METRICS_CACHED = 8
METRICS_LIMIT = 20000
"""Records the metrics charts read at most (the newest in the window): a bound on one request's work."""
SINCE = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
BUCKETS = {"1h": 300, "24h": 3600, "7d": 6 * 3600, "30d": 86400}
"""Each window's bucket for the charts: about 12-30 points."""


class FilterError(ValueError):
    """A bad filter in a request (answered 400 with this message)."""


@dataclass(frozen=True)
class Filters:
    env: str | None = None
    end_reason: str | None = None
    source: str | None = None
    since: str | None = None
    faults: bool = False

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        since = query.get("since") or None
        if since is not None and since not in SINCE:
            raise FilterError(f"since={since!r}: one of {', '.join(SINCE)}")
        return cls(
            env=query.get("env") or None,
            end_reason=query.get("end_reason") or None,
            source=query.get("source") or None,
            since=since,
            faults=query.get("faults") in ("1", "true", "on"),
        )


def open_reader(plan: Any) -> CallsReader | None:
    """The reader over the environment's first readable store, or None when no sink is readable."""
    from handler.records.sinks import READABLE, Store

    names = [n for n in plan.registry.selected(plan.settings, "records") if n in READABLE] or ["sqlite"]
    store = plan.build_other("records", names[0])
    return CallsReader(store) if isinstance(store, Store) else None


class CallsReader:
    def __init__(self, store: Any) -> None:
        self.store = store
        self._metrics: dict[tuple[Any, ...], dict[str, Any]] = {}
        """The last few metrics answers, by window, environment and the window's state."""

    def describe(self) -> str:
        return repr(self.store)

    def page(
        self, f: Filters, page: int = 1, size: int = PAGE_SIZE, now: float | None = None
    ) -> dict[str, Any]:
        """One page of the list, newest first: {total, page, pages, size, calls: [row, ...]}."""
        size = max(1, min(size, MAX_PAGE_SIZE))
        page = max(1, page)
        now = time.time() if now is None else now
        total, records = self.store.page(
            equal={
                c: v for c, v in (("env", f.env), ("end_reason", f.end_reason), ("source", f.source)) if v
            },
            since=now - SINCE[f.since] if f.since else None,
            faults=bool(f.faults),
            limit=size,
            offset=(page - 1) * size,
        )
        return {
            "total": total,
            "page": page,
            "pages": max(1, -(-total // size)),
            "size": size,
            "calls": [row(r) for r in records],
        }

    def choices(self) -> dict[str, list[str]]:
        """The values the list's filters offer: environments, end reasons and sources present."""
        return self.store.distinct()

    def call(self, call_id: str) -> dict[str, Any] | None:
        return self.store.record(call_id)

    def metrics(self, since: str, env: str | None = None, now: float | None = None) -> dict[str, Any]:
        """The key metrics per bucket over the window: TTFA p50/p95, false interruptions per
        minute, faults per stage (each bucket computed as `calls stats` computes a whole store)."""
        if since not in SINCE:
            raise FilterError(f"since={since!r}: one of {', '.join(SINCE)}")
        now = time.time() if now is None else now
        width = BUCKETS[since]
        end = (now // width + 1) * width  # buckets keep their edges as time goes on: cacheable
        start = end - SINCE[since]
        key = (since, env, start, self._state(start, env))
        if (cached := self._metrics.get(key)) is not None:
            return cached
        records = self.store.records(since=start, env=env, limit=METRICS_LIMIT)
        buckets: dict[int, list[Mapping[str, Any]]] = {}
        for r in records:
            buckets.setdefault(int((parse_iso(r["started_at"]) - start) // width), []).append(r)
        points = []
        for i in range(int(-(-SINCE[since] // width))):
            calls = buckets.get(i, [])
            s = stats(calls) if calls else None
            points.append(
                {
                    "start": start + i * width,
                    "calls": len(calls),
                    "ttfa_p50_ms": s["timings"]["ttfa"]["p50_ms"] if s else None,
                    "ttfa_p95_ms": s["timings"]["ttfa"]["p95_ms"] if s else None,
                    "false_interruptions_per_min": s["false_interruptions_per_min"] if s else None,
                    "faults": {stage: sum(k.values()) for stage, k in s["faults"].items()} if s else {},
                }
            )
        doc = {
            "since": since,
            "bucket_s": width,
            "start": start,
            "end": end,
            "calls": len(records),
            "truncated": len(records) >= METRICS_LIMIT,
            "points": points,
        }
        while len(self._metrics) >= METRICS_CACHED:
            self._metrics.pop(next(iter(self._metrics)))
        self._metrics[key] = doc
        return doc

    def _state(self, start: float, env: str | None) -> tuple[Any, ...]:
        """What changes when the window's calls do: their count and the newest start (a count
        query: milliseconds, where decoding the window's records takes seconds for 10,000)."""
        return self.store.window(start, env)


def row(record: Mapping[str, Any]) -> dict[str, Any]:
    """What the list shows of one call: `calls export`'s row (faults as `stt.retries=2 ...`), and
    how many faults in all."""
    return {**flat(record), "fault_count": fault_total(record.get("faults") or {})}
