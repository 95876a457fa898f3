"""The Calls pages (list, one call, metrics over time) and their JSON API over handler.web.calls.

Store reads block (SQLite, or a PostgreSQL round trip): they run in the default executor, never
on the app's event loop, which also serves the Talk page's token requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from handler.web.calls import PAGE_SIZE, FilterError, Filters

READER = web.AppKey("calls_reader", object)
"""The app's `CallsReader` (None: no readable store), set by `add_routes`."""


def add_routes(app: web.Application, cfg: Any, page: Callable[..., Any]) -> None:
    """The Calls pages (rendered by the app's `page`) and their API, reading `cfg.calls`."""
    app[READER] = cfg.calls
    app.router.add_get("/calls", page(cfg, "Calls", "calls.js"))
    app.router.add_get("/calls/{id}", page(cfg, "Call", "call.js", section="Calls"))
    app.router.add_get("/metrics", page(cfg, "Metrics", "metrics.js"))
    app.router.add_get("/api/calls", list_calls)
    app.router.add_get("/api/calls/{id}", one_call)
    app.router.add_get("/api/metrics", metrics)


async def _read(request: web.Request, work: Callable[[Any], Any]) -> web.Response:
    reader: Any = request.app[READER]
    if reader is None:
        return web.json_response(
            {"error": "no readable call-record store: records.sinks lists none"}, status=503
        )
    try:
        result = await asyncio.get_running_loop().run_in_executor(None, work, reader)
    except (FilterError, ValueError) as e:
        return web.json_response({"error": str(e)}, status=400)
    except Exception as e:  # a store that cannot be reached: said on the page, the app goes on
        return web.json_response(
            {"error": f"cannot read {reader.describe()}: {type(e).__name__}: {e}"}, status=503
        )
    if result is None:
        return web.json_response({"error": "no such call"}, status=404)
    return web.json_response(result)


def _int(query: Any, key: str, default: int) -> int:
    try:
        return int(query.get(key, default))
    except ValueError:
        raise FilterError(f"{key}={query.get(key)!r}: not a number") from None


async def list_calls(request: web.Request) -> web.Response:
    q = request.query

    def work(reader: Any) -> dict[str, Any]:
        doc = reader.page(Filters.parse(q), _int(q, "page", 1), _int(q, "size", PAGE_SIZE))
        doc["choices"] = reader.choices()
        return doc

    return await _read(request, work)


async def one_call(request: web.Request) -> web.Response:
    return await _read(request, lambda reader: reader.call(request.match_info["id"]))


async def metrics(request: web.Request) -> web.Response:
    q = request.query
    return await _read(request, lambda reader: reader.metrics(q.get("since") or "24h", q.get("env") or None))
