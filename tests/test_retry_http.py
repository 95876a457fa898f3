"""The retry policy and the pooled session, against a local server that counts what it sees."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from handler.fakes import ProviderServer
from handler.pipeline import http
from handler.pipeline.retry import RetryableStatus, RetryPolicy


def policy(max_retries: int = 2, timeout: float = 1.0) -> RetryPolicy:
    return RetryPolicy(
        max_retries=max_retries, backoff_initial=0.01, backoff_max=0.05, jitter=0.0, timeout=timeout
    )


class CountingServer(ProviderServer):
    """The shared local server base (it counts connections and attempts per path), answering
    /fail/<n>/<status>[/<retry-after>] with that status n times and then 200; /stall/<s> slowly."""

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        parts = request.path.strip("/").split("/")
        if parts[0] == "fail" and self.stats.paths[request.path] <= int(parts[1]):
            headers = {"Retry-After": parts[3]} if len(parts) > 3 else {}
            return web.Response(status=int(parts[2]), headers=headers)
        if parts[0] == "stall":
            await asyncio.sleep(float(parts[1]))
        return web.Response(text="ok")


@pytest.fixture
async def server():
    async with CountingServer() as s:
        yield s


@pytest.fixture
async def session():
    s = http.make_session(max_connections=4, timeout=1.0, keepalive=30)
    yield s
    await s.close()


async def test_two_failures_then_success_succeeds_in_three_attempts(server, session) -> None:
    status, body = await http.request(session, policy(), "GET", server.url + "/fail/2/503")
    assert (status, body) == (200, b"ok")
    assert server.stats.paths["/fail/2/503"] == 3


async def test_three_failures_surface_after_max_retries_plus_one(server, session) -> None:
    with pytest.raises(RetryableStatus) as e:
        await http.request(session, policy(), "GET", server.url + "/fail/3/500")
    assert e.value.status == 500
    assert server.stats.paths["/fail/3/500"] == 3


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_client_errors_other_than_408_and_429_are_not_retried(server, session, status: int) -> None:
    got, _ = await http.request(session, policy(), "GET", f"{server.url}/fail/1/{status}")
    assert got == status and server.stats.paths[f"/fail/1/{status}"] == 1


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
async def test_retryable_statuses_are_retried(server, session, status: int) -> None:
    got, _ = await http.request(session, policy(), "GET", f"{server.url}/fail/1/{status}")
    assert got == 200 and server.stats.paths[f"/fail/1/{status}"] == 2


async def test_retry_after_is_honoured(server, session) -> None:
    started = time.monotonic()
    await http.request(session, policy(), "GET", server.url + "/fail/1/429/0.4")
    assert time.monotonic() - started >= 0.4


def test_retry_after_is_capped_at_the_timeout() -> None:
    assert policy(timeout=2.0).backoff(1, retry_after=3600) == 2.0


def test_backoff_is_exponential_with_bounded_jitter() -> None:
    p = RetryPolicy(max_retries=5, backoff_initial=0.5, backoff_max=3.0, jitter=0.25, timeout=10)
    for n, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0)]:
        assert base <= p.backoff(n) <= base + 0.25


async def test_a_stall_longer_than_the_timeout_is_cut_at_the_timeout(server, session) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await http.request(session, policy(max_retries=0, timeout=0.3), "GET", server.url + "/stall/5")
    assert time.monotonic() - started < 1.5


def test_the_policy_maps_onto_livekit_connect_options() -> None:
    opts = policy(max_retries=2, timeout=15.0).conn_options()
    assert (opts.max_retry, opts.timeout) == (2, 15.0)


async def test_prewarm_opens_one_connection_that_later_requests_reuse(server, session) -> None:
    warmed = await http.prewarm(
        session, policy(), [server.url + "/v1/chat", server.url.replace("http", "ws") + "/ws"]
    )
    assert warmed == 1 and server.stats.connections == 1
    for _ in range(5):
        await http.request(session, policy(), "GET", server.url + "/ok")
    assert server.stats.connections == 1


async def test_prewarm_failure_is_not_fatal(session) -> None:
    assert await http.prewarm(session, policy(max_retries=0, timeout=0.5), ["http://127.0.0.1:9/"]) == 0


def test_the_pooled_session_has_the_configured_limits() -> None:
    async def make() -> tuple[int, float]:
        s = http.make_session(max_connections=50, timeout=15.0, keepalive=60)
        try:
            assert isinstance(s.connector, aiohttp.TCPConnector)
            return s.connector.limit, s.timeout.sock_read or 0
        finally:
            await s.close()

    assert asyncio.run(make()) == (50, 15.0)
