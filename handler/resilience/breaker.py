"""Per-process provider health, so a provider that is down is not hammered by every call.

A provider (stage, name, endpoint) is healthy until a request spends all its attempts. It is then
down: requests are refused without touching the network until the next probe is due. The first
probe comes `probe_initial` seconds later; each failed probe doubles the wait, up to `probe_max`.
A probe is one request (for the STT, a single attempt; an LLM or TTS probe keeps livekit's
attempts, bounded by MAX_RETRIES + 1); its success (or any request's progress) makes the provider
healthy again. The state lives in this module, so every session of the process (every call a job process
serves) shares it: a thousand calls wanting a dead provider make one probe per interval, not a
thousand.

A provider wrapped by `handler.resilience.guarded` (every provider of a chain and the STT of every
session) goes through its breaker; livekit's FallbackAdapter, which probes a failed provider on
each request it hands to the next one, then sees a fast refusal instead of a new connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

logger = logging.getLogger("handler.resilience")


class ProviderDown(Exception):
    """Raised instead of contacting a provider whose next probe is not yet due."""

    def __init__(self, key: str, retry_in: float) -> None:
        self.key = key
        self.retry_in = retry_in
        super().__init__(f"{key} is down; next probe in {retry_in:.1f} s")


@dataclass
class Breaker:
    key: str
    probe_initial: float
    probe_max: float
    failures: int = 0
    """Consecutive requests (and probes) that failed."""
    next_probe: float = 0.0
    probing: bool = False
    probes: int = 0
    """Probes sent since the provider went down (for tests and the log)."""
    clock: object = field(default=time.monotonic, repr=False)

    def _now(self) -> float:
        return self.clock()  # type: ignore[operator]

    @property
    def down(self) -> bool:
        return self.failures > 0

    def retry_in(self) -> float:
        return max(0.0, self.next_probe - self._now())

    def admit(self) -> bool:
        """True when a request may go out now: healthy, or the one probe that is due."""
        if not self.down:
            return True
        if self.probing or self._now() < self.next_probe:
            return False
        self.probing = True
        self.probes += 1
        return True

    async def wait_for_probe(self) -> None:
        """Until this caller may send the probe (others keep waiting for the next interval)."""
        while not self.admit():
            await asyncio.sleep(max(0.05, min(self.retry_in(), 1.0)))

    def success(self) -> None:
        if self.down:
            logger.info("%s is back after %d probe(s)", self.key, self.probes)
        self.failures = self.probes = 0
        self.probing = False

    def failure(self) -> None:
        """A request spent its attempts (or a probe failed): wait longer before the next probe."""
        self.failures += 1
        self.probing = False
        wait = min(self.probe_initial * 2 ** (self.failures - 1), self.probe_max)
        self.next_probe = self._now() + wait
        logger.warning("%s is down; next probe in %.1f s", self.key, wait)


_breakers: dict[str, Breaker] = {}


def breaker_for(key: str, *, probe_initial: float, probe_max: float) -> Breaker:
    """The process's breaker for a provider endpoint (created healthy on first use)."""
    found = _breakers.get(key)
    if found is None:
        found = _breakers[key] = Breaker(key, probe_initial, probe_max)
    else:  # the latest configuration wins (a reloaded worker, a test with other limits)
        found.probe_initial, found.probe_max = probe_initial, probe_max
    return found


def reset_all() -> None:
    """Forget every provider's state (tests; a process that starts over)."""
    _breakers.clear()
