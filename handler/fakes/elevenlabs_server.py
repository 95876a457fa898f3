"""Local ElevenLabs TTS server for the unmodified elevenlabs plugin.

Wire format (as livekit/plugins/elevenlabs/tts.py speaks it):
  websocket {base}/text-to-speech/{voice_id}/multi-stream-input?model_id=..&output_format=pcm_N
  &sync_alignment=true&auto_mode=..&inactivity_timeout=.., header `xi-api-key`. Client messages:
    {"text": " ", "voice_settings": {..}, "context_id": C}   open context C
    {"text": "Hello there. ", "context_id": C, "flush": true?} buffer text (flush: synthesize now)
    {"context_id": C, "close_context": true}                 finish C (flushed text is spoken)
    {"close_socket": true}                                   close the websocket
  Server messages: {"audio": <base64 pcm_s16le>, "contextId": C, "normalizedAlignment":
  {"chars", "charStartTimesMs", "charDurationsMs"}, "alignment": {..}} (alignment only with
  sync_alignment=true, times cumulative within the context) and {"isFinal": true, "contextId": C}
  once C is closed; {"error": .., "message": .., "contextId": C} for an in-band error.
  POST {base}/text-to-speech/{voice_id}/stream?output_format=pcm_N, JSON {"text", "model_id",
  ...} -> chunked `audio/pcm` body (used by TTS.synthesize()).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from ._base import (
    CONNECT_FAULTS,
    STREAM_FAULTS,
    Fault,
    ProviderServer,
    StreamFault,
    abort_connection,
    logger,
    maybe_await,
    pause,
)

AudioForText = Callable[[str, int], "bytes | Awaitable[bytes]"]

CHUNK_SECONDS = 0.1  # audio per message; the real service sends variable, similar-sized chunks
DEFAULT_CHUNK_SCHEDULE = (120,)  # chars buffered before synthesizing without a flush


def tone_for_text(text: str, sample_rate: int, *, seconds_per_char: float = 0.06) -> bytes:
    """Default audio: a quiet 220 Hz tone, ~0.06 s per character (about speaking rate), with
    short fades so chunk joins don't click. Empty/blank text gives no audio."""
    import numpy as np

    chars = len(text.strip())
    if not chars:
        return b""
    n = int(chars * seconds_per_char * sample_rate)
    t = np.arange(n) / sample_rate
    wave = 0.1 * np.sin(2 * math.pi * 220.0 * t)
    fade = min(n // 2, int(0.01 * sample_rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    return (wave * 32767).astype("<i2").tobytes()


def pcm_rate(output_format: str) -> int | None:
    """pcm_22050 -> 22050; None for formats this server can't produce (mp3, opus, ulaw)."""
    kind, _, rest = output_format.partition("_")
    return int(rest) if kind == "pcm" and rest.isdigit() else None


def alignment_for(text: str, start_ms: float, duration_ms: float) -> dict[str, list[Any]]:
    """Characters spread evenly over the audio that speaks them."""
    per = duration_ms / max(len(text), 1)
    return {
        "chars": list(text),
        "charStartTimesMs": [round(start_ms + i * per) for i in range(len(text))],
        "charDurationsMs": [round(per)] * len(text),
    }


class _Context:
    """One synthesis context: its commands are processed by its own task so a slow context
    never blocks reading the socket (an interruption closes a context mid-audio)."""

    def __init__(self, context_id: str, fault: Fault | None, schedule: tuple[int, ...]) -> None:
        self.id = context_id
        self.fault = StreamFault(fault)
        self.slow_first_byte = fault.delay if fault and fault.kind == "slow_first_byte" else 0.0
        self.schedule = schedule
        self.commands: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.buffer = ""
        self.sent = 0  # audio messages sent
        self.audio_ms = 0.0  # position of the next audio in the context
        self.task: asyncio.Task[None] | None = None


class _Socket:
    """One multi-stream-input websocket: reads client messages, runs a task per context."""

    def __init__(
        self, server: ElevenLabsServer, request: web.Request, ws: web.WebSocketResponse, rate: int
    ) -> None:
        self.server, self.profile = server, server.profile
        self.request, self.ws, self.rate = request, ws, rate
        self.sync_alignment = request.query.get("sync_alignment") == "true"
        self.schedule = DEFAULT_CHUNK_SCHEDULE  # a context init packet may carry its own
        self.contexts: dict[str, _Context] = {}
        self.send_lock = asyncio.Lock()  # context tasks share the socket

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server.max_session
        # the client asks the server to drop the socket after this much silence
        idle = float(self.request.query.get("inactivity_timeout", 20))
        try:
            while not self.ws.closed and loop.time() < deadline:
                try:
                    timeout = min(idle, max(deadline - loop.time(), 0.01))
                    msg = await self.ws.receive(timeout=timeout)
                except TimeoutError:
                    break
                if msg.type != WSMsgType.TEXT:
                    break  # close / error; the service never expects binary input
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    await self.send({"error": "invalid_message", "message": "expected JSON"})
                    continue
                self.server.received.append((self.request.path, data))
                if data.get("close_socket"):
                    break
                self.handle(data)
        finally:
            for ctx in self.contexts.values():
                if ctx.task is not None:
                    ctx.task.cancel()

    def handle(self, data: dict[str, Any]) -> None:
        context_id = data.get("context_id") or "default"
        if schedule := (data.get("generation_config") or {}).get("chunk_length_schedule"):
            self.schedule = tuple(schedule)
        if data.get("close_context"):
            if context_id in self.contexts:
                self.contexts[context_id].commands.put_nowait(("close", ""))
            return
        ctx = self.contexts.get(context_id) or self.open_context(context_id)
        if (text := data.get("text") or "").strip():
            ctx.commands.put_nowait(("text", text))
        if data.get("flush"):
            ctx.commands.put_nowait(("flush", ""))

    def open_context(self, context_id: str) -> _Context:
        server = self.server
        fault = server._take_fault(self.request, STREAM_FAULTS | {"slow_first_byte"}, main=True)
        ctx = self.contexts[context_id] = _Context(context_id, fault, self.schedule)
        ctx.task = server._spawn(self.run_context(ctx))
        server.stats.events["contexts"] += 1
        return ctx

    async def send(self, payload: dict[str, Any] | str) -> None:
        async with self.send_lock:
            if not self.ws.closed:
                text = payload if isinstance(payload, str) else json.dumps(payload)
                await self.ws.send_str(text)

    async def run_context(self, ctx: _Context) -> None:
        while True:
            op, text = await ctx.commands.get()
            if op == "text":
                ctx.buffer += text
                # without flushes the service starts speaking once enough text is buffered
                cut = ctx.buffer.rfind(" ") + 1
                if len(ctx.buffer) >= ctx.schedule[0] and cut:
                    piece, ctx.buffer = ctx.buffer[:cut], ctx.buffer[cut:]
                    if not await self.speak(ctx, piece):
                        return
            elif op == "flush":
                piece, ctx.buffer = ctx.buffer, ""
                if not await self.speak(ctx, piece):
                    return
            else:  # close: unflushed text is dropped, flushed text has been spoken
                if (due := ctx.fault.due_at_end()) and not await self.apply(ctx, due):
                    return
                await pause(self.profile.final_delay)
                await self.send({"isFinal": True, "contextId": ctx.id})
                self.server.stats.events["finals"] += 1
                return

    async def speak(self, ctx: _Context, text: str) -> bool:
        rate = self.rate
        audio = await self.server._audio(text, rate)
        total_ms = len(audio) / 2 / rate * 1000
        # spaces included: the plugin rebuilds words from the concatenated characters
        align = alignment_for(text, ctx.audio_ms, total_ms) if self.sync_alignment else None
        step = int(CHUNK_SECONDS * rate) * 2
        for offset in range(0, len(audio), step):
            if (due := ctx.fault.due(ctx.sent)) and not await self.apply(ctx, due):
                return False
            if ctx.sent == 0:
                await pause(self.profile.first_byte + ctx.slow_first_byte)
            chunk = audio[offset : offset + step]
            chunk_ms = len(chunk) / 2 / rate * 1000
            msg: dict[str, Any] = {
                "audio": base64.b64encode(chunk).decode(),
                "contextId": ctx.id,
                "isFinal": None,
            }
            if align is not None:
                # the characters whose start time falls inside this chunk
                lo, hi = ctx.audio_ms, ctx.audio_ms + chunk_ms
                idx = [i for i, t in enumerate(align["charStartTimesMs"]) if lo <= t < hi]
                msg["normalizedAlignment"] = msg["alignment"] = {
                    key: [values[i] for i in idx] for key, values in align.items()
                }
            await self.send(msg)
            ctx.sent += 1
            ctx.audio_ms += chunk_ms
            self.server.stats.events["audio_messages"] += 1
            await pause(chunk_ms / 1000 * self.profile.realtime_factor)
        return True

    async def apply(self, ctx: _Context, fault: Fault) -> bool:
        """Apply a stream fault; False when the context is over."""
        if fault.kind == "stall":
            await pause(fault.delay)
            return True
        if fault.kind == "malformed":
            await self.send("{not json")
            return True
        if fault.kind == "error":
            error = {"error": "injected_error", "message": fault.message, "code": fault.status}
            await self.send({**error, "contextId": ctx.id})
            return False
        abort_connection(self.request)  # disconnect: the whole socket goes, like a crash
        return False


class ElevenLabsServer(ProviderServer):
    """`async with ElevenLabsServer() as srv: elevenlabs.TTS(base_url=srv.base_url,
    api_key="test", encoding="pcm_22050", http_session=session)`.

    Faults: a websocket handshake takes "status" faults; each new context takes one of
    "slow_first_byte" (first audio of the context), "stall", "disconnect" (drops the whole
    socket), "malformed" (a non-JSON text frame), "error" (in-band error for the context).
    The HTTP stream endpoint takes any one fault ("error" excepted; "malformed" answers 200 with
    an HTML body instead of audio).
    stats.events: "contexts", "audio_messages", "finals" (contexts ended with isFinal),
    "http_synthesis", "fault:<kind>".
    """

    def __init__(self, *, audio_for_text: AudioForText = tone_for_text, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.audio_for_text = audio_for_text

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def spoken(self) -> list[str]:
        """The text each websocket context was given, its pieces joined (a reply arrives as its
        first phrase, then sentences), whitespace collapsed."""
        texts: dict[str, list[str]] = {}
        for _, data in self.received:
            if isinstance(data, dict) and data.get("text"):
                texts.setdefault(data.get("context_id") or "default", []).append(data["text"])
        return [" ".join("".join(pieces).split()) for pieces in texts.values()]

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/text-to-speech/{voice_id}/multi-stream-input", self._multi_stream)
        app.router.add_post("/v1/text-to-speech/{voice_id}/stream", self._http_stream)
        app.router.add_get("/v1/voices", self._voices)

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"detail": {"status": str(status), "message": message}}

    def _denied(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("xi-api-key") == self.api_key:
            return None
        return self.status_response(401, "Invalid API key")

    async def _voices(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        voice = {"voice_id": "local-voice", "name": "Local", "category": "premade"}
        return web.json_response({"voices": [voice]})

    async def _audio(self, text: str, sample_rate: int) -> bytes:
        if not text.strip():
            return b""  # the closing empty flush has nothing to speak
        audio = await maybe_await(self.audio_for_text(text, sample_rate))
        return audio[: len(audio) // 2 * 2]  # whole 16-bit samples only

    # -- HTTP streaming (ChunkedStream) ------------------------------------------------------
    async def _http_stream(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        rate = pcm_rate(request.query.get("output_format", "mp3_44100_128"))
        if rate is None:
            return self.status_response(400, "only pcm_* output formats are served locally")
        try:
            body = await request.json()
            text = str(body["text"])
        except (ValueError, KeyError, TypeError):
            return self.status_response(400, "Invalid request body: 'text' is required.")
        self.received.append((request.path, body))

        fault = self._take_fault(request, CONNECT_FAULTS | (STREAM_FAULTS - {"error"}), main=True)
        if (failed := await self._connect_fault(fault)) is not None:
            return failed
        if fault is not None and fault.kind == "malformed":
            # what a misbehaving proxy returns; the plugin insists on an audio/* type
            return web.Response(text="<html>bad gateway</html>", content_type="text/html")
        self.stats.events["http_synthesis"] += 1

        resp = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        await resp.prepare(request)
        audio = await self._audio(text, rate)
        plan = StreamFault(fault)
        step = int(CHUNK_SECONDS * rate) * 2
        await pause(self.profile.first_byte)
        for sent, offset in enumerate(range(0, len(audio), step)):
            if due := plan.due(sent):
                if due.kind == "stall":
                    await pause(due.delay)
                else:  # disconnect
                    abort_connection(request)
                    return resp
            chunk = audio[offset : offset + step]
            await resp.write(chunk)
            await pause(len(chunk) / 2 / rate * self.profile.realtime_factor)
        await resp.write_eof()
        return resp

    # -- websocket multi-context (SynthesizeStream) ------------------------------------------
    async def _multi_stream(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        rate = pcm_rate(request.query.get("output_format", "mp3_44100_128"))
        if rate is None:
            logger.warning("ElevenLabsServer serves pcm_* only; use encoding='pcm_22050'")
            return self.status_response(400, "only pcm_* output formats are served locally")
        failed = await self._take_connect_fault(request, main=True, kinds={"status"})
        if failed is not None:
            return failed

        ws = await self._prepare_ws(request)
        try:
            await _Socket(self, request, ws, rate).serve()
        finally:
            with contextlib.suppress(Exception):
                await ws.close()
            self._forget_ws(ws)
        return ws
