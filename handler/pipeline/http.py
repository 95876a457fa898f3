"""The process's one pooled aiohttp session, its pre-warming, and the retried request helper."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from handler.pipeline.retry import RETRYABLE_STATUS, RetryableStatus, RetryPolicy, parse_retry_after

logger = logging.getLogger("handler.pipeline.http")

_session: aiohttp.ClientSession | None = None


def make_session(*, max_connections: int, timeout: float, keepalive: float) -> aiohttp.ClientSession:
    """A keep-alive pool with the configured connection limit; every wait has a timeout."""
    connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=keepalive, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout),
    )


def shared_session(settings: Any) -> aiohttp.ClientSession:
    """The process-wide session, created on first use inside the running event loop."""
    global _session
    if _session is None or _session.closed:
        _session = make_session(
            max_connections=settings.get("http.max_connections"),
            timeout=settings.get("http.timeout"),
            keepalive=settings.get("http.keepalive_timeout"),
        )
    return _session


async def close_shared_session() -> None:
    global _session
    if _session is not None and not _session.closed:
        await _session.close()
    _session = None


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
