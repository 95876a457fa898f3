"""The STT stream under our own bounds, whatever the plugin and livekit's retry loop do.

livekit-agents 1.8.9 resets a stream's retry budget whenever an attempt lasted longer than the
timeout, which a timed-out handshake always does, so a Soniox handshake that never answers is
retried forever; and the Soniox plugin reconnects by itself, without limit, when its socket
closes, dropping the audio it had sent. `GuardedSTT` wraps a streaming STT so that:

- every attempt is one connection of the plugin (its stream runs with `max_retry=0`, and the
  Soniox plugin's own reconnect becomes a failed attempt, see `StreamClosed`); attempts are counted
  per request and never exceed `max_retry + 1`; the budget starts over only once an attempt
  delivered a transcript event (the provider demonstrably works) or the provider rotated a stream
  that had served for longer than the timeout;
- a watchdog fails the attempt as a timeout when speech was sent and nothing came back for the
  timeout (a stalled stream, a first result later than the timeout);
- the audio of the utterance in flight (since the last final transcript, with a short pre-roll)
  is kept and replayed on the next attempt's stream, so a stream that drops or is rotated
  mid-utterance loses no speech;
- between requests, the provider's per-process `Breaker` decides: while it is down the stream
  waits for the next probe (one attempt), or, inside a fallback chain, is refused at once so the
  next provider serves without paying for attempts that are known to fail.

Every failed attempt that is retried is emitted as a recoverable `error` event (the session and
the fault ledger count it). When a request has spent its attempts, a chain member raises (the
chain's next provider takes over; speech in flight is counted as lost); a stage alone rides the
failure out: the request is emitted as an unrecoverable error (counted, and the decider's
evidence), the stream stays open holding the utterance, and the next probe replays it, so a burst
costs the turn time, not the words. The decider (`handler.resilience.decider`) ends the call when
the stage stays down; speech still held then is counted and logged as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, APIError, APITimeoutError, stt, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from handler import livekit_compat
from handler.resilience.breaker import Breaker, ProviderDown
from handler.resilience.gate import Refused

if TYPE_CHECKING:
    from handler.resilience.ledger import FaultLedger

logger = logging.getLogger("handler.resilience")

VOICED_RMS = 500.0
"""int16 RMS from which a frame counts as speech the provider owes a result for (about -36 dBFS;
the level at which the Soniox server starts an utterance)."""
MIN_OWED_SPEECH = 0.2
"""Seconds of voiced audio from which the provider owes a result (a shorter blip may be ignored)."""
PREROLL = 0.5
"""Seconds of audio kept before speech, so a replayed utterance keeps its first word."""
MAX_REPLAY = 30.0
"""Seconds of an utterance kept for replay at most (a longer one loses its start)."""
REPLAY_SHARE = 0.1
"""Seconds a provider may take per second of replayed audio before the watchdog counts (a
streaming recognizer transcribes at least ten times faster than real time)."""
WATCH_INTERVAL = 0.1
"""Seconds between watchdog checks."""
ROTATION_CLOSE_CODES = frozenset({1000, 1001})
"""WebSocket close codes of an orderly close (a provider's session limit, a server restart)."""


class StreamClosed(APIConnectionError):
    """A provider closed a stream that had connected (the plugin would silently reconnect)."""

    def __init__(self, message: str, *, connected_for: float, close_code: int | None) -> None:
        super().__init__(message, retryable=True)
        self.connected_for = connected_for
        self.close_code = close_code


def _voiced(frame: rtc.AudioFrame) -> bool:
    # RMS >= VOICED_RMS without the square root and np.mean's Python wrapper: every input frame
    # (100 a second) passes here; 3 us instead of 10
    samples = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32)
    return bool(samples.size) and float(np.dot(samples, samples)) >= VOICED_RMS * VOICED_RMS * samples.size


class GuardedSTT(stt.STT):
    """A streaming STT with bounded attempts, a watchdog and utterance replay (module docstring)."""

    def __init__(
        self,
        inner: stt.STT,
        *,
        breaker: Breaker,
        in_chain: bool = False,
        ledger: FaultLedger | None = None,
    ) -> None:
        super().__init__(capabilities=inner.capabilities)
        self.inner = inner
        self.breaker = breaker
        self.in_chain = in_chain
        self.ledger = ledger
        self._label = inner.label

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def provider(self) -> str:
        return self.inner.provider

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        return await self.inner.recognize(buffer, language=language, conn_options=conn_options)

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> GuardedStream:
        return GuardedStream(self, language=language, conn_options=conn_options)

    def prewarm(self) -> None:
        self.inner.prewarm()

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclasses.dataclass
class _Held:
    frame: rtc.AudioFrame
    voiced: bool


class GuardedStream(stt.RecognizeStream):
    def __init__(
        self, guard: GuardedSTT, *, language: NotGivenOr[str], conn_options: APIConnectOptions
    ) -> None:
        # livekit's loop around `_run` must not retry: `_run` holds the bound itself
        super().__init__(stt=guard, conn_options=dataclasses.replace(conn_options, max_retry=0))
        self._guard = guard
        self._language = language
        self._max_attempts = conn_options.max_retry + 1
        self._timeout = conn_options.timeout
        self._policy = conn_options
        self._attempt_options = dataclasses.replace(conn_options, max_retry=0)
        self._held: deque[_Held] = deque()
        self._held_seconds = 0.0
        self._held_voiced_seconds = 0.0
        self._held_voiced = False
        self._pushed_seconds = 0.0
        self._current: stt.RecognizeStream | None = None
        self._input_ended = False
        self._owed_from: float | None = None
        """When the provider last owed a result and had not answered: the watchdog's clock."""
        self._progress = False
        self._failing: APIError | None = None
        """The last request's error while no attempt since has made progress (riding it out)."""

    # -- input: remember the utterance in flight, feed the current attempt ---------------------
    def _hold(self, frame: rtc.AudioFrame) -> None:
        voiced = _voiced(frame)
        self._held.append(_Held(frame, voiced))
        self._held_seconds += frame.duration
        self._held_voiced_seconds += frame.duration if voiced else 0.0
        self._pushed_seconds += frame.duration
        self._trim(MAX_REPLAY if self._held_voiced_seconds else PREROLL)
        if self._held_voiced and self._owed_from is None and self._current is not None:
            self._owed_from = time.monotonic()

    def _trim(self, keep: float) -> None:
        while self._held_seconds > keep and len(self._held) > 1:
            dropped = self._held.popleft()
            self._held_seconds -= dropped.frame.duration
            self._held_voiced_seconds -= dropped.frame.duration if dropped.voiced else 0.0
        self._held_voiced = self._held_voiced_seconds >= MIN_OWED_SPEECH

    def _utterance_done(self) -> None:
        """The provider closed the utterance: keep only the last PREROLL seconds (the next
        utterance may have started in them)."""
        self._trim(PREROLL)

    async def _forward_input(self) -> None:
        async for data in livekit_compat.stream_input(self):
            current = self._current
            if isinstance(data, self._FlushSentinel):
                if current is not None:
                    # a finished attempt refuses input; the next one starts from the held audio
                    with contextlib.suppress(RuntimeError):
                        current.flush()
                continue
            self._hold(data)
            if current is not None:
                with contextlib.suppress(RuntimeError):
                    current.push_frame(data)
        self._input_ended = True
        if self._current is not None:
            with contextlib.suppress(RuntimeError):
                self._current.end_input()

    # -- attempts ---------------------------------------------------------------------------------
    async def _run(self) -> None:
        forward = asyncio.create_task(self._forward_input(), name="GuardedStream.forward")
        try:
            await self._attempts()
        finally:
            if self._failing is not None:  # closed while riding a failure out (the call ended)
                self._report_lost(self._failing)
            await utils.aio.cancel_and_wait(forward)

    async def _attempts(self) -> None:
        breaker, failed = self._guard.breaker, 0
        while True:
            probe = False
            if not breaker.admit():
                if self._guard.in_chain:  # the next provider serves now; no attempt is spent
                    raise Refused(ProviderDown(breaker.key, breaker.retry_in()))
                await breaker.wait_for_probe()
            probe = breaker.down
            started = time.monotonic()
            try:
                if await self._attempt():
                    return  # the input ended and the provider finished
                raise APIConnectionError("the STT stream ended before its input did")
            except asyncio.CancelledError:
                if probe:  # the stream closed during the probe: the next one may go
                    breaker.probing = False
                raise
            except (TimeoutError, APIError) as e:
                error = e if isinstance(e, APIError) else APITimeoutError(f"STT attempt timed out: {e}")
                lived = time.monotonic() - started
                rotated = (
                    isinstance(error, StreamClosed)
                    and error.close_code in ROTATION_CLOSE_CODES
                    and lived >= self._timeout
                )
                if self._progress or rotated:
                    breaker.success()
                    failed, probe = 0, False
                if rotated:
                    # the provider's own session limit: a new request, not a fault
                    if self._held_voiced:
                        logger.warning(
                            "%s closed its stream mid-utterance (session limit); replaying %.1f s of audio",
                            self._guard.label,
                            self._held_seconds,
                        )
                    continue
                failed += 1
                if probe or failed >= self._max_attempts or not error.retryable:
                    breaker.failure()
                    if self._guard.in_chain:  # the chain's next provider takes over
                        self._report_lost(error)
                        raise error from None
                    # alone, the stage rides the failure out: the request is reported as failed
                    # for good, the next one (the probe) starts when the breaker lets it, with
                    # the utterance still held; the decider ends the call if the stage stays down
                    self._request_failed(error, failed)
                    failed = 0
                    continue
                livekit_compat.emit_recoverable_error(self, error)
                interval = livekit_compat.retry_interval(self._policy, failed - 1)
                logger.warning(
                    "%s attempt %d of %d failed: %s; retrying in %.1f s%s",
                    self._guard.label,
                    failed,
                    self._max_attempts,
                    error,
                    interval,
                    f", replaying {self._held_seconds:.1f} s of the utterance" if self._held_voiced else "",
                )
                await asyncio.sleep(interval)

    def _request_failed(self, error: APIError, attempts: int) -> None:
        self._failing = error
        livekit_compat.emit_failed_request(self, error)
        # one ERROR line per request that failed for good, as livekit writes for the LLM and TTS
        logger.error(
            "%s failed after %d attempt(s): %s; next try in %.1f s%s",
            self._guard.label,
            attempts,
            error,
            self._guard.breaker.retry_in(),
            f", keeping {self._held_seconds:.1f} s of the utterance for it" if self._held_voiced else "",
        )

    def _report_lost(self, error: Exception) -> None:
        if not self._held_voiced:
            return
        if self._guard.ledger is not None:
            self._guard.ledger.note("stt", "lost")
        logger.error(
            "%s failed with the user's utterance in flight (%.1f s of audio lost): %s",
            self._guard.label,
            self._held_seconds,
            error,
        )

    async def _attempt(self) -> bool:
        """One connection. True when it ended because the input ended; raises on failure."""
        inner = self._guard.inner.stream(language=self._language, conn_options=self._attempt_options)
        held_start = self._pushed_seconds - self._held_seconds
        inner.start_time_offset = max(0.0, self.start_time_offset + held_start)
        self._progress = False
        # a replay is owed a result once the provider has heard it: the watchdog's clock starts
        # that much later (on a busy machine the fakes' recognizer took over 1 s for 20 s of audio)
        replay = self._held_seconds * REPLAY_SHARE
        self._owed_from = time.monotonic() + replay if self._held_voiced else None
        for held in list(self._held):  # the utterance in flight, replayed
            inner.push_frame(held.frame)
        self._current = inner
        if self._input_ended:
            inner.end_input()
        try:
            async with inner:
                events = inner.__aiter__()
                while True:
                    ev = await self._next_event(events)
                    if ev is None:
                        return self._input_ended
                    if not self._progress:
                        self._progress = True
                        self._failing = None
                        self._guard.breaker.success()
                    if ev.type in (stt.SpeechEventType.FINAL_TRANSCRIPT, stt.SpeechEventType.END_OF_SPEECH):
                        self._utterance_done()
                    # progress restarts the clock; speech still in flight keeps it running
                    self._owed_from = time.monotonic() if self._held_voiced else None
                    livekit_compat.send_event(self, ev)
        finally:
            self._current = None

    async def _next_event(self, events: Any) -> stt.SpeechEvent | None:
        """The attempt's next event; None at its end; APITimeoutError when it owes a result and
        has said nothing for the timeout (the watchdog)."""
        waiting = asyncio.ensure_future(events.__anext__())
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=WATCH_INTERVAL)
                if done:
                    try:
                        return waiting.result()
                    except StopAsyncIteration:
                        return None
                owed = self._owed_from
                if owed is not None and time.monotonic() - owed > self._timeout:
                    raise APITimeoutError(f"no transcript for {self._timeout:g} s while speech was pending")
        finally:
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await waiting
