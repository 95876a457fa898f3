"""The retry policy: one definition drives both the handler's own HTTP calls (through tenacity)
and the provider plugins (through livekit's APIConnectOptions), so every request has exactly one
retry layer with the same limits."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import tenacity

# Retried: connection errors, timeouts, 408 (request timeout), 429 (rate limited) and 5xx.
RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


class RetryableStatus(Exception):
    """An HTTP response whose status is worth retrying; carries Retry-After when the server sent it."""

    def __init__(self, status: int, url: str, retry_after: float | None = None):
        self.status = status
        self.url = url
        self.retry_after = retry_after
        super().__init__(f"HTTP {status} from {url}")


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the delta-seconds form; HTTP dates are rare from APIs)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _is_retryable(exc: BaseException) -> bool:
    import asyncio

    import aiohttp

    return isinstance(
        exc, RetryableStatus | aiohttp.ClientConnectionError | asyncio.TimeoutError | TimeoutError
    )


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    backoff_initial: float
    backoff_max: float
    jitter: float
    timeout: float
    """Seconds one attempt may take (HTTP_TIMEOUT)."""

    @property
    def attempts(self) -> int:
        return self.max_retries + 1

    def backoff(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds before retry `retry_number` (1-based): exponential with jitter, or the server's
        Retry-After when it asked for one (capped at the timeout, so a bad header cannot stall us)."""
        if retry_after is not None:
            return min(retry_after, self.timeout)
        base = min(self.backoff_initial * 2 ** (retry_number - 1), self.backoff_max)
        return base + random.uniform(0, self.jitter)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = exc.retry_after if isinstance(exc, RetryableStatus) else None
        return self.backoff(state.attempt_number, retry_after)

    def retrying(self) -> tenacity.AsyncRetrying:
        """A tenacity controller for the handler's own requests (`async for attempt in ...`)."""
        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(_is_retryable),
            reraise=True,
        )

    def conn_options(self) -> Any:
        """The same limits for livekit's provider plugins (their own retry loop)."""
        from livekit.agents import APIConnectOptions

        return APIConnectOptions(
            max_retry=self.max_retries, retry_interval=self.backoff_initial, timeout=self.timeout
        )
