"""Pieces shared by the local provider servers: latency profile, fault queue, counters and the
aiohttp plumbing (ephemeral port, per-connection tracking, bounded shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Self, TypeVar

from aiohttp import web

logger = logging.getLogger("handler.fakes")

T = TypeVar("T")

FaultKind = Literal["status", "slow_first_byte", "stall", "disconnect", "malformed", "error"]

# Faults that can only be expressed before a response starts (HTTP status line / handshake).
CONNECT_FAULTS: frozenset[FaultKind] = frozenset({"status", "slow_first_byte"})
# Faults that hit a response/context/session that is already streaming.
STREAM_FAULTS: frozenset[FaultKind] = frozenset({"stall", "disconnect", "malformed", "error"})
ALL_FAULTS: frozenset[FaultKind] = CONNECT_FAULTS | STREAM_FAULTS


@dataclass
class LatencyProfile:
    """Simulated provider latency. Every field defaults to "instant".

    connect_delay: extra cost of a NEW TCP connection (stands in for DNS + TCP + TLS); applied
        once, to the first request (or websocket handshake) seen on that connection.
    first_byte: time to first token (LLM), first audio of a TTS context, first result of a
        recognized utterance (STT).
    final_delay: pause before the closing message (LLM finish chunk, TTS isFinal, STT final
        tokens after the endpoint was detected).
    tokens_per_second: LLM token pacing (None = unpaced).
    realtime_factor: TTS audio pacing, wall seconds per second of audio sent (1.0 = real time,
        0 = as fast as possible).
    """

    connect_delay: float = 0.0
    first_byte: float = 0.0
    final_delay: float = 0.0
    tokens_per_second: float | None = None
    realtime_factor: float = 0.0


@dataclass(frozen=True)
class Fault:
    """One injected failure, consumed by exactly one attempt.

    Use the constructors. `after` counts the stream units (LLM content chunks, TTS audio messages
    of a context, STT result messages of a session) sent before a stream fault hits. `path`
    restricts the fault to requests whose path ends with it; None means the server's main
    endpoints (chat completions, synthesis, transcription), never side routes like /models.
    """

    kind: FaultKind
    status: int = 500
    retry_after: float | None = None
    delay: float = 0.0
    after: int = 0
    message: str = "injected fault"
    path: str | None = None

    @classmethod
    def http(cls, status: int, *, retry_after: float | None = None, path: str | None = None) -> Fault:
        """Reject the request (or websocket handshake) with this HTTP status."""
        return cls("status", status=status, retry_after=retry_after, path=path)

    @classmethod
    def rate_limited(cls, retry_after: float = 1.0, *, path: str | None = None) -> Fault:
        return cls.http(429, retry_after=retry_after, path=path)

    @classmethod
    def slow_first_byte(cls, delay: float, *, path: str | None = None) -> Fault:
        """Hold back the first byte (HTTP response / TTS context audio / STT handshake)."""
        return cls("slow_first_byte", delay=delay, path=path)

    @classmethod
    def stall(cls, seconds: float, *, after: int = 1, path: str | None = None) -> Fault:
        """Stop sending for `seconds` after `after` units, then carry on."""
        return cls("stall", delay=seconds, after=after, path=path)

    @classmethod
    def disconnect(cls, *, after: int = 1, path: str | None = None) -> Fault:
        """Close the TCP connection without a proper end (no [DONE], no close frame)."""
        return cls("disconnect", after=after, path=path)

    @classmethod
    def malformed(cls, *, after: int = 1, path: str | None = None) -> Fault:
        """Send one garbage (non-JSON / non-audio) unit after `after` units."""
        return cls("malformed", after=after, path=path)

    @classmethod
    def error(
        cls,
        status: int = 500,
        message: str = "injected error",
        *,
        after: int = 0,
        path: str | None = None,
    ) -> Fault:
        """An in-band error message in the provider's own format (SSE error object, ElevenLabs
        {"error": ..}, Soniox {"error_code": ..}) after `after` units."""
        return cls("error", status=status, message=message, after=after, path=path)


class FaultQueue:
    """Faults consumed in order. Each attempt takes the first queued fault it can express
    (`kinds`) for its path, so "fail twice then succeed" is just two faults in the queue."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._faults: list[Fault] = list(faults)
        self.applied: list[Fault] = []

    def push(self, *faults: Fault) -> None:
        self._faults.extend(faults)

    def clear(self) -> None:
        self._faults.clear()

    def __len__(self) -> int:
        return len(self._faults)

    def pending(self) -> list[Fault]:
        return list(self._faults)

    def take(self, path: str, kinds: Collection[FaultKind], *, main: bool) -> Fault | None:
        for i, fault in enumerate(self._faults):
            if fault.kind not in kinds:
                continue
            if fault.path is None and not main:
                continue
            if fault.path is not None and not path.endswith(fault.path):
                continue
            del self._faults[i]
            self.applied.append(fault)
            return fault
        return None


@dataclass
class ServerStats:
    connections: int = 0  # TCP connections accepted
    requests: int = 0  # HTTP requests, websocket handshakes included
    ws_sessions: int = 0  # websocket upgrades completed
    paths: Counter[str] = field(default_factory=Counter)  # attempts per request path
    events: Counter[str] = field(default_factory=Counter)  # provider units (see each server)
    # the path of each request that paid connect_delay (the first on its connection), in order:
    # which request opened a connection, asserted without timing it
    connect_paid: list[str] = field(default_factory=list)

    def attempts(self, path_suffix: str) -> int:
        """Requests whose path ends with `path_suffix` (voice ids and prefixes vary)."""
        return sum(n for p, n in self.paths.items() if p.endswith(path_suffix))


async def maybe_await(value: T | Awaitable[T]) -> T:
    """Hooks may be plain or async callables. Sync hooks run on the event loop, so they
    should be fast (or be made async, e.g. with asyncio.to_thread)."""
    if inspect.isawaitable(value):
        return await value
    return value


async def pause(seconds: float | None) -> None:
    if seconds and seconds > 0:
        await asyncio.sleep(seconds)


def abort_connection(request: web.BaseRequest) -> None:
    """Drop the TCP connection mid-response: buffered bytes are flushed, then FIN, with no
    terminating chunk / close frame, which is what a crashed upstream looks like."""
    if request.transport is not None:
        request.transport.close()


class ProviderServer:
    """aiohttp server on 127.0.0.1:<ephemeral> used as `async with Server(...) as srv`."""

    def __init__(
        self,
        *,
        profile: LatencyProfile | None = None,
        faults: Iterable[Fault] = (),
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_session: float = 300.0,
    ) -> None:
        self.profile = profile or LatencyProfile()
        self.faults = FaultQueue(faults)
        self.api_key = api_key  # None: any key is accepted
        self.stats = ServerStats()
        # JSON bodies / websocket messages / configs the clients sent, for assertions
        self.received: list[tuple[str, Any]] = []
        # bounds every websocket session and idle wait, so nothing outlives a stuck client
        self.max_session = max_session
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._fresh_connections: set[object] = set()
        self._websockets: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- subclass API ------------------------------------------------------------------------
    def _add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": {"message": message, "code": status}}

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def url(self) -> str:
        """http://host:port (no provider prefix)."""
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.on_shutdown.append(self._close_websockets)
        self._add_routes(app)
        # handler_cancellation: a handler whose client went away stops (no pacing into the
        # void); short shutdown_timeout: handlers are bounded anyway, don't hang a test on exit
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        self._track_connections(self._runner.server)
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is None:
            return
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- plumbing ----------------------------------------------------------------------------
    def _track_connections(self, server: Any) -> None:
        # aiohttp's low-level Server is told about every accepted TCP connection
        # (RequestHandler = one connection). Wrapping that hook counts real connections, not
        # requests, and marks them so the first request on each pays connect_delay.
        original_made, original_lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: Any) -> None:
            self.stats.connections += 1
            self._fresh_connections.add(handler)
            original_made(handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            self._fresh_connections.discard(handler)
            original_lost(handler, exc)

        server.connection_made = connection_made
        server.connection_lost = connection_lost

    @property
    def open_connections(self) -> int:
        server = self._runner.server if self._runner else None
        return len(server.connections) if server else 0

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.stats.requests += 1
        self.stats.paths[request.path] += 1
        if request.protocol in self._fresh_connections:
            self._fresh_connections.discard(request.protocol)
            self.stats.connect_paid.append(request.path)
            await pause(self.profile.connect_delay)
        return await handler(request)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _close_websockets(self, _app: web.Application) -> None:
        for ws in list(self._websockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server shutdown")

    def _take_fault(self, request: web.Request, kinds: Collection[FaultKind], *, main: bool) -> Fault | None:
        fault = self.faults.take(request.path, kinds, main=main)
        if fault is not None:
            self.stats.events[f"fault:{fault.kind}"] += 1
        return fault

    async def _connect_fault(self, fault: Fault | None) -> web.Response | None:
        """Apply a connect-time fault: the error response to send, or None once a
        slow_first_byte delay has passed (stream faults are left to the caller)."""
        if fault is None:
            return None
        if fault.kind == "slow_first_byte":
            await pause(fault.delay)
        if fault.kind != "status":
            return None
        return self.status_response(fault.status, fault.message, retry_after=fault.retry_after)

    async def _take_connect_fault(
        self, request: web.Request, *, main: bool, kinds: Collection[FaultKind] = CONNECT_FAULTS
    ) -> web.Response | None:
        return await self._connect_fault(self._take_fault(request, kinds, main=main))

    def status_response(self, status: int, message: str, *, retry_after: float | None = None) -> web.Response:
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        return web.json_response(self._error_body(status, message), status=status, headers=headers)

    async def _prepare_ws(self, request: web.Request, **kwargs: Any) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(**kwargs)
        await ws.prepare(request)
        self.stats.ws_sessions += 1
        self._websockets.add(ws)
        return ws

    def drop_connections(self) -> None:
        """Cut every open connection without a proper end, as a failing service does: streams
        in flight break, and the clients' next attempts meet the queued faults."""
        server = self._runner.server if self._runner else None
        for handler in list(server.connections if server else []):
            if handler.transport is not None:
                handler.transport.close()

    def _forget_ws(self, ws: web.WebSocketResponse) -> None:
        self._websockets.discard(ws)


class StreamFault:
    """The stream fault (if any) taken for one response/context/session. `due(sent)` returns
    it once, right before unit number `sent` goes out; `due_at_end()` fires a fault whose
    `after` exceeded the stream length just before the closing message."""

    def __init__(self, fault: Fault | None) -> None:
        self.fault = fault if fault is not None and fault.kind in STREAM_FAULTS else None
        self._fired = False

    def due(self, sent: int) -> Fault | None:
        if self.fault is None or self._fired or sent < self.fault.after:
            return None
        self._fired = True
        return self.fault

    def due_at_end(self) -> Fault | None:
        if self.fault is None or self._fired:
            return None
        self._fired = True
        return self.fault
