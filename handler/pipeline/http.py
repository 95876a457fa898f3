"""The process's one pooled aiohttp session, its pre-warming, and the retried request helper."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from handler.pipeline.retry import RETRYABLE_STATUS, RetryableStatus, RetryPolicy, parse_retry_after

logger = logging.getLogger("handler.pipeline.http")

_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)
"""One session per event loop: a job process has one loop, but with livekit's thread executor
(`worker.job_executor = "thread"`) every job runs its own loop in one process, and an aiohttp
session belongs to the loop it was made on."""


def make_session(*, max_connections: int, timeout: float, keepalive: float) -> aiohttp.ClientSession:
    """A keep-alive pool with the configured connection limit; every wait has a timeout."""
    connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=keepalive, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout),
    )


def shared_session(settings: Any) -> aiohttp.ClientSession:
    """The running event loop's session (the job's), created on first use."""
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        session = _sessions[loop] = make_session(
            max_connections=settings.get("http.max_connections"),
            timeout=settings.get("http.timeout"),
            keepalive=settings.get("http.keepalive_timeout"),
        )
    return session


async def close_shared_session() -> None:
    """Closes the running event loop's session (the job's), if it has one."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None and not session.closed:
        await session.close()


async def request(
    session: aiohttp.ClientSession,
    policy: RetryPolicy,
    method: str,
    url: str,
    **kwargs: Any,
) -> tuple[int, bytes]:
    """One request under the retry policy: retried on connection errors, timeouts, 408, 429 and
    5xx (honouring Retry-After), each attempt bounded by the policy's timeout."""
    async for attempt in policy.retrying():
        with attempt:
            async with asyncio.timeout(policy.timeout):
                async with session.request(method, url, **kwargs) as resp:
                    body = await resp.read()
                    if resp.status in RETRYABLE_STATUS:
                        raise RetryableStatus(
                            resp.status, url, parse_retry_after(resp.headers.get("Retry-After"))
                        )
                    return resp.status, body
    raise AssertionError("unreachable: tenacity re-raises the last error")


def origins(urls: Iterable[str]) -> list[str]:
    """scheme://host:port of each URL, once each (websocket schemes map to their HTTP twins)."""
    seen: dict[str, None] = {}
    for url in urls:
        parts = urlsplit(url)
        scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
        if scheme in ("http", "https") and parts.netloc:
            seen[f"{scheme}://{parts.netloc}"] = None
    return list(seen)


async def prewarm(session: aiohttp.ClientSession, policy: RetryPolicy, urls: Iterable[str]) -> int:
    """Open a pooled connection to each provider host (DNS, TCP, TLS) so the first turn doesn't
    pay for it. Any HTTP answer, even 404, leaves a warm keep-alive connection; failures only log.
    Returns how many hosts answered."""
    targets = origins(urls)

    async def one(origin: str) -> bool:
        try:
            await request(session, policy, "HEAD", origin + "/")
            return True
        except Exception as e:  # pre-warming is an optimisation: never fatal
            logger.warning("pre-warm of %s failed: %s", origin, type(e).__name__)
            return False

    results = await asyncio.gather(*(one(o) for o in targets))
    return sum(results)
