"""A stand-in for a LiveKit server's agent-worker endpoint, for what the real server does not show.

The real livekit-server (`handler.fakes.livekit_server`) carries the end-to-end tests: rooms,
dispatch, calls, draining. This fake stays for what only the protocol shows, in a fraction of a
second: why a registration was refused (the token's exact fault), the status a draining worker
reports (WS_FULL) and how it closes its socket, and every token the worker sent, so a test can
check none was printed.

The worker (livekit-agents 1.8, `AgentServer._connection_task`) opens a websocket to
`<LIVEKIT_URL path>/agent` (an `http(s)` scheme becomes `ws(s)`; query `worker_token=` only on
LiveKit Cloud) with `Authorization: Bearer <JWT>`: HS256, signed with the API secret, `iss` = the
API key, grant `video.agent`. Then, all binary protobuf:

    worker -> WorkerMessage(register=RegisterWorkerRequest(type, agent_name, version, ...))
    server -> ServerMessage(register=RegisterWorkerResponse(worker_id, server_info))
    worker -> WorkerMessage(update_worker=...) every 2.5 s; status WS_FULL once it drains
    worker -> update_job / migrate_job / availability / ping (answered with pong)

Nothing else is served (no jobs, no rooms). Every request is recorded (`auth_attempts`,
`messages`, `connections`) for assertions.

In-process:

    async with FakeLiveKitServer(api_key="k", api_secret="s") as lk:
        ...  # point a worker at lk.url
        reg = await lk.wait_registered(timeout=30)

From synchronous code (e.g. a test driving a worker subprocess), the same server runs on its own
event loop in a background thread:

    with FakeLiveKitServer(api_key="k", api_secret="s").in_thread() as lk:
        reg = lk.wait_registered_sync(timeout=30)
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import WSMsgType, web
from livekit.protocol import agent, models

T = TypeVar("T")

SERVER_VERSION = "1.9.0-fake"
SERVER_PROTOCOL = 16  # the signalling protocol version real servers report in ServerInfo


@contextlib.contextmanager
def _short_keys_allowed() -> Iterator[None]:
    # `livekit-server --dev` style secrets ("secret") are shorter than PyJWT likes; the worker
    # warns about its own key already, the fake server need not repeat it on every handshake
    import jwt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        yield


@dataclass(frozen=True)
class AuthAttempt:
    """One websocket handshake and what the server made of its token."""

    at: float
    path: str
    status: int  # 101 = accepted (switched to websocket); 401/403 = refused
    reason: str  # "ok", or why it was refused
    api_key: str | None  # the token's `iss` (read without trusting it), for diagnostics
    query: dict[str, str]
    token: str | None = field(default=None, repr=False)  # a credential: never printed

    @property
    def accepted(self) -> bool:
        return self.status == 101


@dataclass
class WorkerConnection:
    """One accepted worker websocket."""

    index: int
    opened_at: float
    worker_id: str | None = None
    register: agent.RegisterWorkerRequest | None = None
    closed_at: float | None = None
    close_code: int | None = None
    ws: web.WebSocketResponse | None = field(default=None, repr=False)

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass(frozen=True)
class ReceivedMessage:
    at: float
    connection: int  # WorkerConnection.index
    kind: str  # the WorkerMessage oneof: register, update_worker, availability, ...
    message: agent.WorkerMessage


class FakeLiveKitServer:
    """aiohttp server on 127.0.0.1:<ephemeral> that accepts LiveKit agent workers.

    The token must be signed with `api_secret` and issued for `api_key`; anything else gets 401
    (403 for a valid token without the agent grant), as a real server does.
    """

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = "local",
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret are required")
        self.api_key = api_key
        self._api_secret = api_secret
        self.region = region
        self._host = host
        self._port = port
        self._on_event = on_event
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # records: appended on the server's loop, read from any thread under the lock
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._generation = 0  # bumped by every record, for wait_for_sync
        self._changed: asyncio.Event | None = None
        self._auth: list[AuthAttempt] = []
        self._connections: list[WorkerConnection] = []
        self._messages: list[ReceivedMessage] = []
        self._unhandled: list[str] = []
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def url(self) -> str:
        """The LIVEKIT_URL a worker should use."""
        return f"ws://{self._host}:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("already started")
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        app = web.Application()
        app.router.add_get("/agent", self._agent_ws)
        app.router.add_get("/{prefix:.+}/agent", self._agent_ws)  # LIVEKIT_URL with a path
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        app.on_shutdown.append(self._close_websockets)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        self._event(f"listening on {self.url}")

    async def aclose(self) -> None:
        if self._runner is None:
            return
        await self._runner.cleanup()  # on_shutdown closes the websockets first
        self._runner = None

    async def __aenter__(self) -> FakeLiveKitServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @contextlib.contextmanager
    def in_thread(self, *, start_timeout: float = 10.0) -> Iterator[FakeLiveKitServer]:
        """Run the server on its own event loop in a daemon thread; stop it on exit."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        error: list[BaseException] = []

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as e:  # reported to the caller below
                error.append(e)
                started.set()
                return
            started.set()
            loop.run_forever()

        self._thread = threading.Thread(target=main, name="fake-livekit", daemon=True)
        self._thread.start()
        try:
            if not started.wait(start_timeout):
                raise TimeoutError("fake LiveKit server did not start")
            if error:
                raise error[0]
            yield self
        finally:
            if not error and loop.is_running():
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(start_timeout)
                loop.call_soon_threadsafe(loop.stop)
            self._thread.join(start_timeout)
            if not self._thread.is_alive():
                loop.close()
            self._thread = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine of this server (e.g. `dispatch_job(...)`) from another thread."""
        if self._loop is None:
            raise RuntimeError("server not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- records -----------------------------------------------------------------------------
    @property
    def auth_attempts(self) -> list[AuthAttempt]:
        with self._lock:
            return list(self._auth)

    @property
    def rejected_auth(self) -> list[AuthAttempt]:
        return [a for a in self.auth_attempts if not a.accepted]

    @property
    def connections(self) -> list[WorkerConnection]:
        with self._lock:
            return list(self._connections)

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    def messages_of(self, kind: str) -> list[agent.WorkerMessage]:
        return [m.message for m in self.messages if m.kind == kind]

    @property
    def registrations(self) -> list[agent.RegisterWorkerRequest]:
        return [m.register for m in self.messages_of("register")]

    @property
    def unhandled_paths(self) -> list[str]:
        """Requests for anything but the agent endpoint (e.g. the twirp API): answered 404."""
        with self._lock:
            return list(self._unhandled)

    def _record(self, fn: Callable[[], None]) -> None:
        with self._cond:
            fn()
            self._generation += 1
            self._cond.notify_all()
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    def _event(self, line: str) -> None:
        if self._on_event is not None:
            self._on_event(line)

    # -- waiting -----------------------------------------------------------------------------
    async def wait_for(self, predicate: Callable[[], T | None], timeout: float) -> T:
        """On the server's loop: until `predicate()` is truthy (returns it), or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            changed = self._changed
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0 or changed is None:
                raise TimeoutError(f"condition not met within {timeout} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)

    def wait_for_sync(self, predicate: Callable[[], T | None], timeout: float) -> T:
        """From any other thread: until `predicate()` is truthy (returns it), or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = self._generation
            value = predicate()  # reads the records through the properties (takes the lock)
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met within {timeout} s")

            def changed(seen: int = seen) -> bool:
                return self._generation != seen

            with self._cond:
                self._cond.wait_for(changed, left)

    def _registered(self, agent_name: str | None) -> Callable[[], agent.RegisterWorkerRequest | None]:
        def find() -> agent.RegisterWorkerRequest | None:
            for reg in self.registrations:
                if agent_name is None or reg.agent_name == agent_name:
                    return reg
            return None

        return find

    async def wait_registered(
        self, timeout: float = 30.0, *, agent_name: str | None = None
    ) -> agent.RegisterWorkerRequest:
        return await self.wait_for(self._registered(agent_name), timeout)

    def wait_registered_sync(
        self, timeout: float = 30.0, *, agent_name: str | None = None
    ) -> agent.RegisterWorkerRequest:
        return self.wait_for_sync(self._registered(agent_name), timeout)

    # -- the agent endpoint ------------------------------------------------------------------
    def _check_token(self, request: web.Request) -> tuple[int, str, str | None, str | None]:
        import jwt
        from livekit.api import TokenVerifier

        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return 401, "missing bearer token", None, None
        token = token.strip()
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            return 401, "malformed token", None, token
        try:
            with _short_keys_allowed():
                claims = TokenVerifier(self.api_key, self._api_secret).verify(token)
        except jwt.InvalidSignatureError:
            return 401, "invalid token signature (wrong API secret?)", issuer, token
        except jwt.InvalidIssuerError:
            return 401, f"unknown API key {issuer!r}", issuer, token
        except jwt.PyJWTError as e:
            return 401, f"invalid token: {e}", issuer, token
        if not (claims.video and claims.video.agent):
            return 403, "token lacks the agent grant", issuer, token
        return 101, "ok", issuer, token

    async def _agent_ws(self, request: web.Request) -> web.StreamResponse:
        status, reason, issuer, token = self._check_token(request)
        attempt = AuthAttempt(
            at=time.time(),
            path=request.path,
            status=status,
            reason=reason,
            api_key=issuer,
            query=dict(request.query),
            token=token,
        )
        self._record(lambda: self._auth.append(attempt))
        if status != 101:
            self._event(f"refused {request.path}: {status} {reason}")
            return web.Response(status=status, text=reason)

        ws = web.WebSocketResponse(timeout=2.0, max_msg_size=16 << 20)
        await ws.prepare(request)
        with self._lock:
            conn = WorkerConnection(index=len(self._connections), opened_at=time.time(), ws=ws)
        self._record(lambda: self._connections.append(conn))
        self._event(f"worker connection #{conn.index} opened")
        try:
            # ends when the socket closes (client gone, or aclose() closing it)
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    if msg.type == WSMsgType.TEXT:
                        self._event(f"#{conn.index}: ignored a text message")
                    continue
                wm = agent.WorkerMessage()
                try:
                    wm.ParseFromString(msg.data)
                except Exception:
                    self._event(f"#{conn.index}: undecodable message, closing")
                    await ws.close(code=1003, message=b"not a WorkerMessage")
                    break
                kind = wm.WhichOneof("message") or "unknown"
                received = ReceivedMessage(time.time(), conn.index, kind, wm)
                self._record(lambda r=received: self._messages.append(r))  # type: ignore[misc]
                if conn.register is None and kind != "register":
                    self._event(f"#{conn.index}: first message was {kind}, not register; closing")
                    await ws.close(code=1008, message=b"expected register")
                    break
                await self._handle(conn, ws, wm, kind)
        finally:

            def closed() -> None:
                conn.closed_at = time.time()
                conn.close_code = ws.close_code

            self._record(closed)
            self._event(f"worker connection #{conn.index} closed (code {ws.close_code})")
        return ws

    async def _handle(
        self, conn: WorkerConnection, ws: web.WebSocketResponse, wm: agent.WorkerMessage, kind: str
    ) -> None:
        if kind == "register":
            reg = wm.register
            worker_id = "AW_" + secrets.token_hex(6)

            def registered() -> None:
                conn.register, conn.worker_id = reg, worker_id

            self._record(registered)
            reply = agent.ServerMessage(
                register=agent.RegisterWorkerResponse(
                    worker_id=worker_id,
                    server_info=models.ServerInfo(
                        edition=models.ServerInfo.Standard,
                        version=SERVER_VERSION,
                        protocol=SERVER_PROTOCOL,
                        region=self.region,
                        node_id="fake-node",
                        agent_protocol=1,
                    ),
                )
            )
            await ws.send_bytes(reply.SerializeToString())
            self._event(
                f"registered worker {worker_id}: agent_name={reg.agent_name!r} "
                f"type={agent.JobType.Name(reg.type)} version={reg.version}"
            )
        elif kind == "ping":
            pong = agent.WorkerPong(last_timestamp=wm.ping.timestamp, timestamp=int(time.time() * 1000))
            await ws.send_bytes(agent.ServerMessage(pong=pong).SerializeToString())
        elif kind == "update_worker":
            u = wm.update_worker
            status = agent.WorkerStatus.Name(u.status) if u.HasField("status") else "-"
            self._event(f"#{conn.index}: status {status} load={u.load:.2f} jobs={u.job_count}")
        else:
            self._event(f"#{conn.index}: {kind}")

    async def _not_found(self, request: web.Request) -> web.Response:
        self._record(lambda: self._unhandled.append(f"{request.method} {request.path}"))
        return web.Response(status=404, text="the fake LiveKit server serves only /agent")

    async def _close_websockets(self, _app: web.Application) -> None:
        for conn in self.connections:
            if conn.ws is not None and not conn.ws.closed:
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=1001, message=b"server shutdown")
