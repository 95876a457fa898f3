"""A real webhook receiver for the `webhook` records sink: aiohttp on 127.0.0.1, checking every
POST's HMAC-SHA256 signature and timestamp as a receiver in production should, and de-duplicating
by the idempotency key.

`statuses` scripts the answers to the next attempts (e.g. [500, 500] then the default 200).
`attempts` counts every POST; `accepted` keeps each record accepted (once per idempotency key);
`rejected` counts POSTs whose signature did not verify (answered 401).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MAX_AGE = 300
"""s a signature's timestamp may be old before the request counts as a replay."""


@dataclass
class Receiver:
    secret: str
    statuses: list[int] = field(default_factory=list)
    attempts: int = 0
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: int = 0
    duplicates: int = 0
    url: str = ""

    def verify(self, request: web.Request, body: bytes) -> bool:
        stamp = request.headers.get("X-Voice-Handler-Timestamp", "")
        given = request.headers.get("X-Voice-Handler-Signature", "")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > MAX_AGE:
            return False
        want = (
            "sha256="
            + hmac.new(self.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        return hmac.compare_digest(want, given)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        if not self.verify(request, body):
            self.rejected += 1
            return web.Response(status=401, text="bad signature")
        if self.statuses:
            return web.Response(status=self.statuses.pop(0), text="scripted")
        key = request.headers.get("Idempotency-Key", "")
        if key in self.accepted:
            self.duplicates += 1
        else:
            self.accepted[key] = json.loads(body)
        return web.Response(status=200, text="ok")


@asynccontextmanager
async def receiving(secret: str, port: int = 0, statuses: list[int] | None = None) -> AsyncIterator[Receiver]:
    receiver = Receiver(secret=secret, statuses=list(statuses or []))
    app = web.Application()
    app.router.add_post("/calls", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{bound}/calls"
    try:
        yield receiver
    finally:
        await runner.cleanup()
