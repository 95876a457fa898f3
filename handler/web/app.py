"""The aiohttp application: the pages, their static files, the vendored LiveKit client, the token
endpoint and the Calls API. Pages are plain HTML with a few values filled in here; the scripts
next to them do the rest in the browser (no build step)."""

from __future__ import annotations

import hmac
import html
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from handler.web import assets
from handler.web.tokens import Target, http_url, mint

STATIC = Path(__file__).parent / "static"
PROBE_TIMEOUT = 3.0
"""Seconds the token endpoint waits for the LiveKit server to answer before it tells the page the
server is unreachable (well inside the 15 s in which the page must say what happened)."""
AGENT_TIMEOUT = 10.0
"""Seconds the page waits, once in the room, for the agent to join before it says no worker took the
dispatch (livekit-server tries a dispatch once; a registered idle worker joins in about a second)."""
ACCESS_COOKIE = "vh_access"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class WebConfig:
    target: Target
    env: str
    host: str
    port: int
    access_token: str | None = None
    """Required by every request when the app listens beyond loopback."""
    calls: Any = None
    """The call-record reader (handler.web.calls.CallsReader), or None when no store is readable."""

    @property
    def beyond_loopback(self) -> bool:
        return self.host not in LOOPBACK


CONFIG = web.AppKey("config", WebConfig)
LIVEKIT_CLIENT = web.AppKey("livekit_client", Path)


def footer(cfg: WebConfig) -> str:
    if cfg.beyond_loopback:
        return (
            f"Listening on {cfg.host}:{cfg.port}, beyond loopback: every request needs the access token. "
            "Browsers allow the microphone only on https:// or localhost."
        )
    return f"Listening on 127.0.0.1:{cfg.port} only."


NAV = (("/", "Talk"), ("/calls", "Calls"), ("/metrics", "Metrics"))
MARK = ' class="here"'
LOADING = '<main id="main"><p class="muted">Loading…</p></main>'


def page(
    cfg: WebConfig, title: str, script: str, *, main: str | None = None, section: str | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler for one page: static/layout.html around `main` (a file in static/, else a
    placeholder the script fills), then `script` after what it needs (the LiveKit client for
    talk.js, common.js for the others). `section` is the navigation entry marked as here."""
    here = section or title
    settings = {"env": cfg.env, "agent_name": cfg.target.agent_name, "agent_timeout": AGENT_TIMEOUT}
    needs = "/vendor/livekit-client.umd.js" if script == "talk.js" else "/static/common.js"
    values = {
        "{{title}}": html.escape(title),
        "{{nav}}": "".join(
            f'<a href="{href}"{MARK if name == here else ""}>{name}</a>' for href, name in NAV
        ),
        "{{env}}": html.escape(cfg.env),
        "{{settings}}": html.escape(json.dumps(settings)),
        "{{main}}": (STATIC / main).read_text() if main else LOADING,
        "{{footer}}": html.escape(footer(cfg)),
        "{{scripts}}": f'<script src="{needs}"></script>\n<script src="/static/{script}"></script>',
    }
    body = (STATIC / "layout.html").read_text()
    for key, value in values.items():
        body = body.replace(key, value)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="text/html", headers={"Cache-Control": "no-store"})

    return handler


@web.middleware
async def require_access(request: web.Request, handler: Any) -> web.StreamResponse:
    """Beyond loopback: `?access=TOKEN` once (then a cookie), or `Authorization: Bearer TOKEN`."""
    cfg = request.app[CONFIG]
    if cfg.access_token is None:
        # on loopback, only requests addressed to loopback: a web page whose DNS name rebinds to
        # 127.0.0.1 could otherwise read a join token (and run up the deployment's provider bills)
        if request.host.rsplit(":", 1)[0].strip("[]") not in LOOPBACK:
            return web.Response(
                status=403, text=f"this app answers requests for 127.0.0.1, not {request.host}"
            )
        return await handler(request)
    given = (
        request.query.get("access")
        or request.cookies.get(ACCESS_COOKIE)
        or request.headers.get("Authorization", "").removeprefix("Bearer ")
    )
    if not given or not hmac.compare_digest(given.encode(), cfg.access_token.encode()):
        return web.Response(
            status=401, text="access token required: open the URL `web` printed (?access=...)"
        )
    response = await handler(request)
    if request.query.get("access"):
        response.set_cookie(ACCESS_COOKIE, cfg.access_token, httponly=True, samesite="Strict")
    return response


async def probe(target: Target) -> str | None:
    """None if the LiveKit server answers HTTP at all; otherwise why not, in words."""
    try:
        async with (
            ClientSession(timeout=ClientTimeout(total=PROBE_TIMEOUT)) as http,
            http.get(http_url(target) + "/") as r,
        ):
            await r.read()
            return None
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT:.0f} s"
    except (ClientError, OSError) as e:
        return str(e) or type(e).__name__


async def token(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    why = await probe(cfg.target)
    if why is not None:
        return web.json_response(
            {"error": f"The LiveKit server at {cfg.target.url} is unreachable ({why}). Is it running?"},
            status=502,
        )
    return web.json_response(mint(cfg.target, cfg.env))


async def vendor(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(request.app[LIVEKIT_CLIENT], headers={"Cache-Control": "max-age=86400"})


def build(cfg: WebConfig) -> web.Application:
    """The app; AssetError when the LiveKit client is not installed (or not as pinned)."""
    from handler.web import calls_api

    app = web.Application(middlewares=[require_access])
    app[CONFIG] = cfg
    app[LIVEKIT_CLIENT] = assets.LIVEKIT_CLIENT.verified()
    app.router.add_get("/", page(cfg, "Talk", "talk.js", main="talk.html"))
    app.router.add_post("/api/token", token)
    app.router.add_get("/vendor/livekit-client.umd.js", vendor)
    app.router.add_static("/static/", STATIC)
    calls_api.add_routes(app, cfg, page)
    return app
