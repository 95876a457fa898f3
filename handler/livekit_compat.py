"""Every touch of a private livekit name, in one place.

livekit's underscore names are not its API: any release may rename or remove them. voice-handler
reaches a few of them, each to work around something the public API does not offer; this module
is the only one that does, so an upgrade has one file to read. Each function says what it reaches,
what it works around, and the release it was read against (CHECKED). `tests/test_livekit_compat.py`
fails when the installed livekit-agents is outside CHECKED (listing the touch points below) and when
code outside this module uses a private livekit name.

Not here, because they are livekit's contract for provider authors rather than its internals: the
methods its base classes declare abstract (`STT._recognize_impl`, the streams' `_run`).

Nothing here imports livekit at module level: the configuration commands import this module's
callers without livekit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any

CHECKED = ("1.8.9", "1.9")
"""livekit-agents releases these touch points were read against: at least the first, below the
second (pyproject's pin says the same; widen both only after reading the new release's sources)."""


@dataclass(frozen=True)
class TouchPoint:
    name: str
    why: str


TOUCH_POINTS = (
    TouchPoint(
        "livekit.agents.cli.cli.setup_logging (replaced)",
        "livekit's CLI installs its own root log handler; ours keeps our format, levels and redaction",
    ),
    TouchPoint(
        "livekit.agents.cli.cli._run_worker",
        "runs an AgentServer with livekit's signal handling and drain, without its typer CLI",
    ),
    TouchPoint(
        "AgentServer._connection_failed",
        "livekit logs 'failed to connect' and returns normally; a supervisor must see exit 1",
    ),
    TouchPoint(
        "livekit.agents.utils.http_context._create_ssl_context",
        "builds the cached TLS context before the event loop runs (135-400 ms blocked loop otherwise)",
    ),
    TouchPoint(
        "RecognizeStream._input_ch",
        "the frames and flushes pushed into a stream; a stream that forwards them (the STT guard, "
        "Soniox's finalize) must read them and livekit has no public reader",
    ),
    TouchPoint(
        "RecognizeStream._event_ch / LLMStream._event_ch",
        "where a stream implementation sends its events (livekit's own plugins do the same)",
    ),
    TouchPoint(
        "RecognizeStream._emit_error",
        "reports a recoverable error as livekit's own retry loop would (error event, metrics); and a "
        "request that failed for good on a stream that stays open to ride the failure out",
    ),
    TouchPoint(
        "APIConnectOptions._interval_for_retry",
        "the wait before a retry, the same schedule livekit's own retry loop uses",
    ),
    TouchPoint(
        "livekit.rtc._ffi_client.FfiClient, AudioStream._ffi_handle/_ffi_queue/_loop",
        "each AudioStream otherwise receives every stream's frames of the process (n x n events)",
    ),
    TouchPoint(
        "soniox SpeechStream._prepare_audio_task/_connect_ws/_recv_messages_task/_ws, STT._capabilities",
        "livekit's flush as Soniox's finalize request; one connection per stream (the plugin reconnects "
        "forever, dropping the audio it sent); manual flush declared",
    ),
    TouchPoint(
        "elevenlabs TTS._run_prewarm/_current_connection",
        "the plugin's pre-warm retries a failing handshake forever beside the streams' own attempts",
    ),
)

BEHAVIOUR = (
    TouchPoint(
        "livekit.agents.worker: 'failed to connect to livekit, retrying' and the wait min(2 n, 10) s",
        "handler.pipeline.reconnect turns worker.reconnect_give_up into max_retry from that schedule and "
        "folds those lines into one a minute (RETRY_MESSAGE, retry_delay)",
    ),
    TouchPoint(
        "livekit::rtc_engine's reconnect lines at ERROR ('resuming connection', 'restarting connection', "
        "'failed to reconnect to the livekit')",
        "handler.pipeline.reconnect.RTC_ENGINE_ATTEMPTS lowers them to WARNING; the lost room is said once",
    ),
    TouchPoint(
        "livekit.agents.ipc.job_proc_lazy_main's SIGINT/SIGTERM guard runs at import, in the forkserver "
        "only; the forkserver keeps SIG_IGN set by its preloads",
        "handler.pipeline.job_signals makes the forkserver and its jobs ignore a stop signal to the "
        "process group (tests/test_room.py's process-group stop test shows it)",
    ),
)
"""What voice-handler relies on in livekit's behaviour rather than its names: log texts and timing
that a release may change without renaming anything. Listed with the touch points when the
installed release is outside CHECKED; the tests named beside each are the ones that would notice."""


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def problems(version: str | None = None) -> list[str]:
    """Why the installed livekit-agents (or `version`) is not one these touch points were checked
    against; empty when it is."""
    version = version or metadata.version("livekit-agents")
    low, high = CHECKED
    if _release(low) <= _release(version) < _release(high):
        return []
    lines = [f"livekit-agents {version} is outside the checked range >={low},<{high}; re-read these:"]
    lines += [f"  {point.name}: {point.why}" for point in TOUCH_POINTS]
    lines.append("and what it relies on in livekit's behaviour:")
    lines += [f"  {point.name}: {point.why}" for point in BEHAVIOUR]
    return lines


# --- the worker (livekit.agents.cli) ---------------------------------------------------------------


def use_our_logging(configure: Callable[[], None]) -> None:
    """livekit's CLI calls `setup_logging` as it starts a worker; ours takes its place."""
    from livekit.agents.cli import cli as lk_cli

    lk_cli.setup_logging = lambda *a, **k: configure()


def run_worker(server: Any, *, log_level: str, dev: bool) -> None:
    """livekit's own worker loop (signals, drain, shutdown) for an AgentServer built by us."""
    from livekit.agents.cli import cli as lk_cli
    from livekit.agents.cli import proto

    lk_cli._run_worker(server, proto.CliArgs(log_level=log_level, dev=dev))


def connection_failed(server: Any) -> bool:
    """Whether the worker gave up connecting to LiveKit (livekit returns normally then)."""
    return bool(getattr(server, "_connection_failed", False))


def prebuild_tls_context() -> None:
    """The TLS context livekit's shared HTTP session builds (cached per process), built now."""
    from livekit.agents.utils import http_context

    http_context._create_ssl_context()


# --- provider streams -------------------------------------------------------------------------------


def stream_input(stream: Any) -> AsyncIterable[Any]:
    """What was pushed into a stream: audio frames and livekit's flush sentinels, in order."""
    return stream._input_ch  # type: ignore[no-any-return]


def send_event(stream: Any, event: Any) -> None:
    """Send one event (speech event, chat chunk) to the stream's reader."""
    stream._event_ch.send_nowait(event)


def emit_recoverable_error(stream: Any, error: Exception) -> None:
    """Report a failed attempt that will be retried, as livekit's own retry loop does."""
    stream._emit_error(error, recoverable=True)


def emit_failed_request(stream: Any, error: Exception) -> None:
    """Report a request that failed for good (every attempt spent) as livekit reports one that
    ends its stream, an unrecoverable error event, while the stream stays open: a lone STT rides
    the failure out (handler.resilience.stt_guard)."""
    stream._emit_error(error, recoverable=False)


def retry_interval(conn_options: Any, attempt: int) -> float:
    """livekit's wait before retry number `attempt` (0-based) under these connect options."""
    return float(conn_options._interval_for_retry(attempt))


def own_stream_events_only(stream: Any) -> None:
    """Makes an `rtc.AudioStream` receive only its own frames from livekit's FFI queue.

    Every AudioStream of a process subscribes to every stream's frames and drops the others' on
    its event loop, so n calls in one process (the loadtest's callers) cost n x n x 100 events a
    second. Filtered on the stream's handle, in the FFI's thread, each gets its own 100. Call it
    before the stream's reader task first runs (it is only scheduled when the constructor
    returns); a frame already queued on the old subscription is moved over."""
    from livekit.rtc._ffi_client import FfiClient

    handle = stream._ffi_handle.handle
    old = stream._ffi_queue
    stream._ffi_queue = FfiClient.instance.queue.subscribe(
        stream._loop,
        filter_fn=lambda e: (
            e.WhichOneof("message") == "audio_stream_event" and e.audio_stream_event.stream_handle == handle
        ),
    )
    FfiClient.instance.queue.unsubscribe(old)
    while not old.empty():
        stream._ffi_queue.put_nowait(old.get_nowait())


# --- provider plugins' internals ----------------------------------------------------------------------


@cache
def soniox_one_connection_stt(finalize_message: str, closed: Callable[..., Exception]) -> Any:
    """livekit's Soniox STT class whose stream is one connection, and which answers livekit's flush.

    - `_connect_ws`: where the plugin reconnects by itself when the provider closes the socket
      (without limit, dropping the audio it had sent), a second connect raises `closed(message,
      connected_for=, close_code=)`, so the resilience layer counts the attempt and replays the
      utterance in flight (`_recv_messages_task` keeps the close code for that message).
    - `_prepare_audio_task`: the plugin's, plus livekit's flush sent as `finalize_message`, queued
      behind the audio sent before it (the send task writes the queue in order); the plugin
      itself drops livekit's flush sentinels.
    - `_capabilities.manual_flush`: livekit flushes a stream only when its STT declares it can.
    Checked against livekit-plugins-soniox 1.8.9."""
    import time

    from livekit import rtc
    from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN
    from livekit.plugins import soniox
    from livekit.plugins.soniox.stt import SpeechStream

    class OneConnectionStream(SpeechStream):
        _connected_at: float | None = None
        _close_code: int | None = None

        async def _prepare_audio_task(self) -> None:
            if not self._ws:
                return
            async for data in self._input_ch:
                if isinstance(data, rtc.AudioFrame):
                    self.audio_queue.put_nowait(data.data.tobytes())
                elif self._stt.capabilities.manual_flush:
                    self.audio_queue.put_nowait(finalize_message)

        async def _connect_ws(self) -> Any:
            if self._connected_at is not None:
                lived = time.monotonic() - self._connected_at
                raise closed(
                    f"Soniox closed the stream after {lived:.1f} s (close code {self._close_code})",
                    connected_for=lived,
                    close_code=self._close_code,
                )
            ws = await super()._connect_ws()
            self._connected_at = time.monotonic()
            return ws

        async def _recv_messages_task(self) -> None:
            ws = self._ws
            try:
                await super()._recv_messages_task()
            finally:
                self._close_code = ws.close_code if ws is not None else None

    class OneConnectionSTT(soniox.STT):
        def __init__(self, *, manual_finalization: bool = True, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._capabilities.manual_flush = manual_finalization

        def stream(
            self, *, language: Any = NOT_GIVEN, conn_options: Any = DEFAULT_API_CONNECT_OPTIONS
        ) -> Any:
            return OneConnectionStream(stt=self, conn_options=conn_options)

    return OneConnectionSTT


@cache
def elevenlabs_one_shot_prewarm_tts() -> Any:
    """livekit's ElevenLabs TTS class whose pre-warm (`_run_prewarm`, opening `_current_connection`)
    is one attempt within `prewarm_timeout`. The plugin's own retries a failing handshake forever
    (1, 2, 4 ... 30 s apart) beside the streams' own attempts, so a provider that is down saw more
    handshakes than MAX_RETRIES + 1 per request; a pre-warm is an optimisation, and the first
    stream connects (and retries) by itself if it failed. Checked against
    livekit-plugins-elevenlabs 1.8.9."""
    import logging

    from livekit.plugins import elevenlabs

    logger = logging.getLogger("handler.resilience")

    class OneShotPrewarmTTS(elevenlabs.TTS):
        prewarm_timeout: float = 15.0

        async def _run_prewarm(self) -> None:
            try:
                await asyncio.wait_for(self._current_connection(), self.prewarm_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the first stream connects (and retries) by itself
                logger.info("ElevenLabs pre-warm failed (one attempt): %s", type(e).__name__)

    return OneShotPrewarmTTS
