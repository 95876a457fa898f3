"""`python -m handler web`: where the Talk page's calls go (LIVEKIT_* of the environment, or with
--local a livekit-server and a worker started here), then the app until Ctrl+C.

--local starts the project's livekit-server runner (handler/fakes/livekit_server.py) on loopback
with fresh credentials, and `python -m handler start` on the chosen environment as a user starts
it, its output in a log file; both stop with the app.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from handler import config
from handler.config import ConfigError
from handler.plan import Plan, load
from handler.web.app import LOOPBACK
from handler.web.tokens import Target

REGISTER_TIMEOUT = 60.0
"""Seconds --local waits for its worker to register (a cold start loads the local models)."""


class WebError(Exception):
    """A mistake the user can fix (exit 2), said in one message."""


def check_host(host: str, access_token: str | None) -> str | None:
    """The access token required beyond loopback (None on loopback); WebError if it is missing."""
    if host in LOOPBACK:
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise WebError(f"--host {host!r}: expected an IP address to listen on, e.g. 0.0.0.0") from None
    if not access_token:
        raise WebError(
            f"--host {host} listens beyond loopback: set an access token every request must carry "
            "(--access-token, or VOICE_HANDLER_WEB_TOKEN), e.g. $(openssl rand -hex 16)"
        )
    if len(access_token) < 16:
        raise WebError("the access token must be 16 characters or more")
    return access_token


def check_port(host: str, port: int) -> None:
    """WebError if the app could not listen there (the port taken, the address not this host's)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise WebError(
                f"--port {port}: cannot listen on {host}:{port} ({e.strerror}); pick another (0: any free)"
            ) from None


def target_from_settings(settings: config.Settings) -> Target:
    """The user's own deployment: LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET (ConfigError if
    one is missing; WebError if the URL is not a LiveKit URL)."""
    from handler.room.target import CallError, check_url

    why = "required by `web` to mint join tokens (or use `web --local` for a server and worker started here)"
    missing = config.missing_livekit(settings, why)
    if missing:
        raise ConfigError(missing, secrets=settings.secret_values())
    url = settings.secret("LIVEKIT_URL") or ""
    try:
        check_url(url)
    except CallError as e:
        raise WebError(str(e)) from None
    return Target(
        url=url,
        api_key=settings.secret("LIVEKIT_API_KEY") or "",
        api_secret=settings.secret("LIVEKIT_API_SECRET") or "",
        agent_name=settings.get("worker.agent_name"),
    )


@contextlib.contextmanager
def local_stack(settings: config.Settings, log: Any = sys.stderr) -> Iterator[Target]:
    """A livekit-server on loopback and a worker on `settings.env` registered with it."""
    from handler.fakes import livekit_server
    from handler.fakes.worker_process import WorkerProcess, room_worker_env

    try:
        binary = livekit_server.install(log)
    except livekit_server.ServerNotFound as e:
        raise WebError(f"--local needs livekit-server: {e}") from None
    with (
        tempfile.TemporaryDirectory(prefix="voice-handler-web-") as tmp,
        livekit_server.LiveKitServer(binary, Path(tmp)) as server,
    ):
        logs = Path(tempfile.gettempdir()) / "voice-handler-web"  # kept after exit, for a look
        logs.mkdir(exist_ok=True)
        worker = WorkerProcess(room_worker_env(settings.root, server.env(), settings.env), logs)
        try:
            print(
                f"livekit-server on {server.url} (127.0.0.1 only); starting a worker ({settings.env})…",
                file=log,
            )
            try:
                worker.wait_for_log("registered worker", REGISTER_TIMEOUT)
            except AssertionError:
                tail = "\n".join(worker.stderr.strip().splitlines()[-15:])
                raise WebError(
                    f"the worker did not register within {REGISTER_TIMEOUT:.0f} s:\n{tail}"
                ) from None
            name = settings.get("worker.agent_name")
            print(f"worker registered as {name!r}; its log: {worker.err_path}", file=log)
            yield Target(server.url, server.api_key, server.api_secret, settings.get("worker.agent_name"))
        finally:
            try:
                worker.terminate()  # SIGTERM: the worker drains (its records flushed)
            except AssertionError:
                worker.kill()


def run(env: str | None, *, local: bool, host: str, port: int, access_token: str | None) -> None:
    """Serve until Ctrl+C or SIGTERM."""
    from aiohttp import web

    from handler.web import app as web_app
    from handler.web import assets

    token = check_host(host, access_token or os.environ.get("VOICE_HANDLER_WEB_TOKEN"))
    # the agent's providers are the worker's business (`--local` starts one, which checks them)
    plan = load(env, providers=False)
    settings = plan.settings
    try:
        assets.LIVEKIT_CLIENT.install()
    except assets.AssetError as e:
        raise WebError(str(e)) from None
    from handler.fakes.livekit_server import free_port

    port = port or free_port()
    check_port(host, port)  # before --local starts anything
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(local_stack(settings)) if local else target_from_settings(settings)
        cfg = web_app.WebConfig(
            target=target,
            env=settings.env,
            host=host,
            port=port,
            access_token=token,
            calls=_calls_reader(plan),
        )
        application = web_app.build(cfg)
        shown = "127.0.0.1" if host in LOOPBACK else host
        url = f"http://{shown}:{port}/"
        print(f"voice-handler web ({settings.env}): {url}", flush=True)
        if token:  # the token is the user's own secret: said where it goes, never printed
            print(f"open {url}?access=<your access token> once; a cookie keeps it", flush=True)
        web.run_app(application, host=host, port=port, print=None, handle_signals=True)


def _calls_reader(plan: Plan) -> Any:
    from handler.records.sinks import SinkConfigError
    from handler.web.calls import open_reader

    try:
        return open_reader(plan)
    except SinkConfigError as e:
        raise WebError(f"the Calls pages' store: {e}") from None
