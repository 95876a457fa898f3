"""The Calls pages and their JSON API (filled in on the call-record store)."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def add_routes(app: web.Application, cfg: Any) -> None:
    from handler.web.app import page

    app.router.add_get("/calls", lambda r: page(cfg, "calls.html", "Calls"))
