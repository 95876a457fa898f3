"""Local Soniox real-time STT server for the unmodified soniox plugin.

Wire format (as livekit/plugins/soniox/stt.py speaks it):
  websocket at {base_url} (the plugin's `base_url` is the full websocket URL), header
  `Authorization: Bearer <key>` (an `api_key` field in the config is accepted too). Client sends
  one JSON config first ({"model", "audio_format": "pcm_s16le", "sample_rate", "num_channels",
  "enable_endpoint_detection", "max_endpoint_delay_ms", ...}), then binary pcm_s16le frames and
  `{"type": "keepalive"}` every 5 s; `{"type": "finalize"}` (manual finalization: the audio so
  far is finalized, its tokens sent final, then the token "<fin>"; our soniox provider sends it
  when livekit flushes the stream); an empty frame ends the stream (the plugin never sends one,
  it just closes).
  Server sends {"tokens": [{"text", "is_final", "start_ms", "end_ms", "confidence",
  "language"}], "final_audio_proc_ms": N, "total_audio_proc_ms": N}. Per utterance: non-final
  tokens first (the plugin emits START_OF_SPEECH only for them), then the final tokens, then a
  separate message with the final token "<end>" (FINAL_TRANSCRIPT + END_OF_SPEECH); "<fin>"
  after a finalize request; {"tokens": [], "finished": true, ...} after the end of the stream.
  Errors: {"error_code": N, "error_message": "..."} then close.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from ._base import (
    STREAM_FAULTS,
    Fault,
    ProviderServer,
    StreamFault,
    abort_connection,
    maybe_await,
    pause,
)

Recognizer = Callable[[bytes], "str | Awaitable[str]"]

WINDOW_SECONDS = 0.02
PREROLL_SECONDS = 0.2  # audio kept from before speech onset, so word starts aren't clipped
TAIL_SECONDS = 0.1  # audio kept after the last voiced window


def _control_type(text: str) -> str | None:
    """The "type" of a client control message ({"type": "keepalive"}, {"type": "finalize"})."""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    return message.get("type") if isinstance(message, dict) else None


def placeholder_recognizer(pcm_16k: bytes) -> str:
    """Default for tests only: every utterance is "hello". Plug a real recognizer in."""
    return "hello"


def to_mono_16k(pcm: bytes, sample_rate: int, channels: int) -> bytes:
    """What recognizers get: 16 kHz mono s16le (first channel, linear resampling)."""
    import numpy as np

    samples = np.frombuffer(pcm[: len(pcm) // (2 * channels) * 2 * channels], dtype="<i2")
    samples = samples[::channels]
    if sample_rate != 16000 and len(samples):
        n = int(len(samples) * 16000 / sample_rate)
        x = np.linspace(0, len(samples) - 1, n)
        samples = np.interp(x, np.arange(len(samples)), samples).astype("<i2")
    return samples.tobytes()


@dataclass
class _Utterance:
    kind: str  # "interim" | "final"
    pcm: bytes  # session sample rate / channels
    start_ms: float
    end_ms: float
    total_ms: float  # audio received so far
    first: bool = False  # first interim of the utterance
    end_token: str | None = "<end>"  # None: finalize the tokens without an endpoint


class EnergySegmenter:
    """Speech = RMS above `threshold` for `min_speech` s; the utterance ends after
    `endpoint_silence` s below it. Works on 20 ms windows of the first channel."""

    def __init__(
        self,
        sample_rate: int,
        channels: int,
        *,
        threshold: float,
        min_speech: float,
        endpoint_silence: float,
        interim_interval: float,
    ) -> None:
        self.rate, self.channels = sample_rate, channels
        self.threshold = threshold
        self.window_bytes = int(sample_rate * WINDOW_SECONDS) * 2 * channels
        self.min_voiced = max(1, round(min_speech / WINDOW_SECONDS))
        self.max_silent = max(1, round(endpoint_silence / WINDOW_SECONDS))
        self.interim_windows = max(1, round(interim_interval / WINDOW_SECONDS))
        self.pending = b""
        self.windows = 0  # windows received in the session
        self.preroll: deque[bytes] = deque(maxlen=round(PREROLL_SECONDS / WINDOW_SECONDS))
        self.speech: list[bytes] | None = None
        self.voiced_run = self.silent_run = 0
        self.start_window = self.last_voiced = self.next_interim = 0

    def ms(self, windows: int) -> float:
        return windows * WINDOW_SECONDS * 1000

    def push(self, data: bytes) -> list[_Utterance]:
        import numpy as np

        self.pending += data
        out: list[_Utterance] = []
        while len(self.pending) >= self.window_bytes:
            window = self.pending[: self.window_bytes]
            self.pending = self.pending[self.window_bytes :]
            x = np.frombuffer(window, dtype="<i2")[:: self.channels].astype(np.float64)
            voiced = float(np.sqrt(np.mean(x * x))) >= self.threshold
            self.windows += 1
            if self.speech is None:
                self.preroll.append(window)
                self.voiced_run = self.voiced_run + 1 if voiced else 0
                if self.voiced_run >= self.min_voiced:
                    self.speech = list(self.preroll)
                    self.start_window = self.windows - self.voiced_run
                    self.last_voiced = self.windows
                    self.silent_run = 0
                    self.next_interim = self.windows + self.interim_windows
                    out.append(self._utterance("interim", first=True))
                continue
            self.speech.append(window)
            if voiced:
                self.last_voiced, self.silent_run = self.windows, 0
            else:
                self.silent_run += 1
            if self.silent_run >= self.max_silent:
                out.append(self.finalize())
            elif self.windows >= self.next_interim:
                self.next_interim = self.windows + self.interim_windows
                out.append(self._utterance("interim"))
        return out

    def _utterance(self, kind: str, *, first: bool = False, end_token: str | None = "<end>") -> _Utterance:
        assert self.speech is not None
        keep = len(self.speech) - (self.windows - self.last_voiced)
        keep += round(TAIL_SECONDS / WINDOW_SECONDS)
        return _Utterance(
            kind,
            b"".join(self.speech[:keep]),
            self.ms(self.start_window),
            self.ms(self.last_voiced),
            self.ms(self.windows),
            first=first,
            end_token=end_token,
        )

    def finalize(self, end_token: str = "<end>") -> _Utterance:
        """Close the current utterance (an empty one when there is no speech)."""
        if self.speech is None:
            return _Utterance("final", b"", 0, 0, self.ms(self.windows), end_token=end_token)
        utterance = self._utterance("final", end_token=end_token)
        self.speech, self.voiced_run = None, 0
        self.preroll.clear()
        return utterance


class SonioxServer(ProviderServer):
    """`async with SonioxServer() as srv: soniox.STT(base_url=srv.base_url, api_key="test",
    http_session=session)`.

    Faults: the handshake takes "status" and "slow_first_byte"; each session takes one of
    "stall", "disconnect", "malformed", "error" (`after` counts result messages).
    stats.events: "sessions", "utterances", "finalizes", "fault:<kind>"; `transcripts` lists
    final texts.

    Segmentation: 20 ms windows with RMS >= `energy_threshold` (int16 units; 500 is about
    -36 dBFS) for `min_speech` s start an utterance, `endpoint_silence` s below it end one
    (capped by the client's max_endpoint_delay_ms). The recognizer gets 16 kHz mono s16le: the
    whole utterance for the final text, the audio so far every `interim_interval` s for the
    non-final text ("..." when it returns nothing, so START_OF_SPEECH still fires).
    """

    def __init__(
        self,
        *,
        recognizer: Recognizer = placeholder_recognizer,
        energy_threshold: float = 500.0,
        min_speech: float = 0.1,
        endpoint_silence: float = 0.5,
        interim_interval: float = 0.5,
        path: str = "/transcribe-websocket",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.recognizer = recognizer
        self.energy_threshold = energy_threshold
        self.min_speech = min_speech
        self.endpoint_silence = endpoint_silence
        self.interim_interval = interim_interval
        self.path = path
        self.transcripts: list[str] = []

    @property
    def base_url(self) -> str:
        return f"ws://{self.url.removeprefix('http://')}{self.path}"

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get(self.path, self._transcribe)

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error_code": status, "error_message": message}

    async def _transcribe(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        if self.api_key is not None and auth is not None and auth != f"Bearer {self.api_key}":
            return self.status_response(401, "Invalid API key.")
        if (failed := await self._take_connect_fault(request, main=True)) is not None:
            return failed

        ws = await self._prepare_ws(request, heartbeat=None)  # aiohttp answers client pings
        self.stats.events["sessions"] += 1
        fault = self._take_fault(request, STREAM_FAULTS, main=True)
        outbox: asyncio.Queue[_Utterance | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_session
        sender: asyncio.Task[None] | None = None

        async def error(status: int, message: str) -> None:
            await ws.send_str(json.dumps(self._error_body(status, message)))
            await ws.close()

        try:
            try:
                msg = await ws.receive(timeout=min(10.0, self.max_session))
                config = json.loads(msg.data) if msg.type == WSMsgType.TEXT else None
            except (TimeoutError, ValueError):
                config = None
            if not isinstance(config, dict):
                await error(400, "First message must be a JSON config.")
                return ws
            self.received.append((request.path, config))
            if self.api_key is not None and auth is None and config.get("api_key") != self.api_key:
                await error(401, "Invalid API key.")
                return ws
            if config.get("audio_format") != "pcm_s16le":
                await error(400, "Only audio_format 'pcm_s16le' is served locally.")
                return ws
            rate = int(config.get("sample_rate") or 16000)
            channels = int(config.get("num_channels") or 1)
            max_delay = float(config.get("max_endpoint_delay_ms") or 3000) / 1000
            segmenter = EnergySegmenter(
                rate,
                channels,
                threshold=self.energy_threshold,
                min_speech=self.min_speech,
                endpoint_silence=min(self.endpoint_silence, max_delay),
                interim_interval=self.interim_interval,
            )
            endpointing = config.get("enable_endpoint_detection", False)
            sender = self._spawn(self._send_results(request, ws, outbox, StreamFault(fault), rate, channels))

            while not ws.closed and not sender.done() and loop.time() < deadline:
                try:
                    msg = await ws.receive(timeout=max(deadline - loop.time(), 0.01))
                except TimeoutError:
                    break
                if msg.type == WSMsgType.BINARY and msg.data:
                    for utterance in segmenter.push(msg.data):
                        if utterance.kind == "final" and not endpointing:
                            utterance.end_token = None  # Soniox only sends <end> when asked
                        outbox.put_nowait(utterance)
                elif msg.type in (WSMsgType.BINARY, WSMsgType.TEXT) and not msg.data:
                    if segmenter.speech is not None:  # end of stream: close open speech
                        outbox.put_nowait(segmenter.finalize())
                    outbox.put_nowait(None)
                    await sender  # drains, sends "finished", closes
                    break
                elif msg.type == WSMsgType.TEXT:
                    # {"type": "keepalive"} needs no answer; {"type": "finalize"} finalizes
                    # the audio received so far (answered like an endpoint, after the
                    # profile's final_delay, with "<fin>" for "<end>"; a "<fin>" alone when
                    # nothing was pending). Its optional "trailing_silence_ms" only tunes the
                    # real service's padding: the energy segmenter needs none.
                    if _control_type(msg.data) == "finalize":
                        self.stats.events["finalizes"] += 1
                        outbox.put_nowait(segmenter.finalize("<fin>"))
                else:
                    break  # closed by the client
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
            self._forget_ws(ws)
            if not ws.closed:
                await ws.close()
        return ws

    async def _send_results(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        outbox: asyncio.Queue[_Utterance | None],
        plan: StreamFault,
        rate: int,
        channels: int,
    ) -> None:
        sent = 0
        total_ms = 0.0

        async def apply(fault: Fault) -> bool:
            """Apply a stream fault; False when the session is over."""
            if fault.kind == "stall":
                await pause(fault.delay)
                return True
            if fault.kind == "malformed":
                await ws.send_str('{"tokens": [{"text": ')
                return True
            if fault.kind == "error":
                await ws.send_str(json.dumps(self._error_body(fault.status, fault.message)))
                await ws.close()
                return False
            abort_connection(request)  # disconnect
            return False

        async def emit(tokens: list[dict[str, Any]], **extra: Any) -> bool:
            nonlocal sent
            if (due := plan.due(sent)) and not await apply(due):
                return False
            payload = {
                "tokens": tokens,
                "final_audio_proc_ms": total_ms,
                "total_audio_proc_ms": total_ms,
                **extra,
            }
            await ws.send_str(json.dumps(payload))
            sent += 1
            return True

        while (utterance := await outbox.get()) is not None:
            total_ms = utterance.total_ms
            if utterance.kind == "interim":
                if utterance.first:
                    await pause(self.profile.first_byte)
                text = await self._recognize(utterance.pcm, rate, channels)
                # a non-final token is what makes the plugin emit START_OF_SPEECH
                if not await emit(self._tokens(text or "...", utterance, final=False)):
                    return
                continue
            await pause(self.profile.final_delay)
            text = await self._recognize(utterance.pcm, rate, channels) if utterance.pcm else ""
            if text:
                self.transcripts.append(text)
                if not await emit(self._tokens(text, utterance, final=True)):
                    return
            if utterance.pcm:  # a finalize with nothing pending closes no utterance
                self.stats.events["utterances"] += 1
            if utterance.end_token is None:
                continue
            end = {
                "text": utterance.end_token,
                "is_final": True,
                "start_ms": utterance.end_ms,
                "end_ms": utterance.end_ms,
                "confidence": 1.0,
            }
            # a message of its own: the final tokens alone give PREFLIGHT_TRANSCRIPT (which
            # preemptive generation starts on), <end> then gives FINAL_TRANSCRIPT + END_OF_SPEECH
            if not await emit([end]):
                return
        if (due := plan.due_at_end()) and not await apply(due):
            return
        if await emit([], finished=True):
            await ws.close()

    async def _recognize(self, pcm: bytes, rate: int, channels: int) -> str:
        text = await maybe_await(self.recognizer(to_mono_16k(pcm, rate, channels)))
        return " ".join(text.split())

    @staticmethod
    def _tokens(text: str, utterance: _Utterance, *, final: bool) -> list[dict[str, Any]]:
        """Word tokens (later words carry their leading space, as Soniox sub-words do) spread
        evenly over the utterance's voiced span."""
        words = text.split()
        span = max(utterance.end_ms - utterance.start_ms, 1.0) / len(words)
        return [
            {
                "text": word if i == 0 else f" {word}",
                "is_final": final,
                "start_ms": round(utterance.start_ms + i * span),
                "end_ms": round(utterance.start_ms + (i + 1) * span),
                "confidence": 0.95,
                "language": "en",
            }
            for i, word in enumerate(words)
        ]
