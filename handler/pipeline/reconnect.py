"""A worker whose livekit-server went away: how long it keeps trying, and what it says meanwhile.

livekit's worker reconnects by itself when the server is unreachable or drops the worker's
websocket (a restart, a network cut): attempt n waits min(2 n, 10) s after the previous one (0, 2,
4, ... 10, 10 ...), and after `max_retry` failed attempts in a row it gives up (the worker then
exits 1: handler.pipeline.worker.run). Each attempt logs a WARNING, six a minute for as long as the server
is gone. Here: the configured time (`worker.reconnect_give_up`) becomes the number of attempts that
spans it, and the attempts' lines become one when the connection is lost, one a minute while it
stays lost, and one when the worker has registered again.
"""

from __future__ import annotations

import logging
import time

RETRY_MESSAGE = "failed to connect to livekit, retrying"
"""The start of livekit's line for each failed attempt (livekit/agents/worker.py, _connection_task)."""
REGISTERED_MESSAGE = "registered worker"
REPORT_EVERY = 60.0
FOREVER = 10**9
"""max_retry for `reconnect_give_up = 0`: at 10 s an attempt, longer than any worker runs."""


def retry_delay(attempt: int) -> float:
    """livekit's wait before retry `attempt` (0-based): 0, 2, 4, ... capped at 10 s."""
    return float(min(attempt * 2, 10))


def attempts_within(seconds: float) -> int:
    """livekit's `max_retry` whose waits add up to at least `seconds` (0: retry forever)."""
    if seconds <= 0:
        return FOREVER
    n, waited = 0, 0.0
    while waited < seconds:
        waited += retry_delay(n)
        n += 1
    return n


class RetryReport(logging.Filter):
    """On livekit's worker logger: lets one line through when the connection is lost, then one a
    minute (how long, how many attempts, when the worker gives up), and says when it is back."""

    def __init__(self, give_up: float, clock: object = time.monotonic) -> None:
        super().__init__()
        self.give_up = give_up
        self._clock = clock
        self.lost_at: float | None = None
        self.attempts = 0
        self._last_report = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        now = self._clock()  # type: ignore[operator]
        if message.startswith(RETRY_MESSAGE):
            self.attempts += 1
            error = getattr(record, "error", None)
            if self.lost_at is None:
                self.lost_at = self._last_report = now
                record.msg, record.args = "lost the connection to livekit-server (%s); retrying %s", (
                    error,
                    self._until(),
                )
                return True
            if now - self._last_report < REPORT_EVERY:
                return False
            self._last_report = now
            record.msg, record.args = (
                "livekit-server still unreachable after %.0f s (%d attempts, last: %s); retrying %s",
                (now - self.lost_at, self.attempts, error, self._until()),
            )
            return True
        if message.startswith(REGISTERED_MESSAGE) and self.lost_at is not None:
            record.msg = f"{message} (again, {now - self.lost_at:.0f} s after the connection was lost)"
            self.lost_at, self.attempts = None, 0
        return True

    def _until(self) -> str:
        if self.give_up <= 0:
            return "until it answers"
        return f"until {self.give_up:.0f} s have passed, then exiting 1"


RTC_ENGINE_ATTEMPTS = ("resuming connection", "restarting connection", "failed to reconnect to the livekit")
"""livekit's native room client (livekit::rtc_engine) logs every attempt to get a room connection
back at ERROR: `resuming connection... attempt: 1`, `restarting connection failed: ...`, and at the
end `failed to reconnect`. An attempt is no failure of the call; whether the call lost its room is
said once, with the job's ids (handler.pipeline.worker.RoomWatch)."""


class RoomReconnectAttempts(logging.Filter):
    """On the `livekit` logger of a job: the native client's reconnect attempts as WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            message = record.getMessage()
            if "rtc_engine" in message and any(a in message for a in RTC_ENGINE_ATTEMPTS):
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_room_filter = RoomReconnectAttempts()


def quiet_room_reconnect_attempts() -> None:
    """Installs the filter once per process (a thread executor prewarms every job in one process)."""
    rtc_logger = logging.getLogger("livekit")
    if _room_filter not in rtc_logger.filters:
        rtc_logger.addFilter(_room_filter)
