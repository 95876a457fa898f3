"""STT `soniox`: livekit's Soniox plugin over its real-time websocket, on the shared HTTP pool."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handler.hookspecs import hookimpl

DEFAULT_URL = "wss://stt-rt.soniox.com/transcribe-websocket"


@hookimpl(trylast=True)
def register_providers(register):
    register(
        "stt",
        "soniox",
        build,
        secrets=("SONIOX_API_KEY",),
        endpoints=lambda o: [o["base_url"] or DEFAULT_URL],
        validate=_validate,
        preload=("livekit.plugins.soniox", "handler.resilience.stt_guard"),
    )


def _validate(options: Mapping[str, Any]) -> list[str]:
    delay = options["max_endpoint_delay_ms"]
    if not 500 <= delay <= 3000:
        return ["max_endpoint_delay_ms: must be a whole number from 500 to 3000 (Soniox's range)"]
    return []


_one_connection_stt: Any = None


def _stt_class() -> Any:
    """livekit's Soniox STT whose stream is one connection: where the plugin would reconnect by
    itself when the provider closes the socket (without limit, dropping the audio it had sent),
    it raises `StreamClosed`, so the resilience layer counts the attempt and replays the
    utterance in flight (handler/resilience/stt_guard.py). Built on first use: livekit stays out
    of the configuration commands' imports."""
    global _one_connection_stt
    if _one_connection_stt is not None:
        return _one_connection_stt
    import time

    from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN
    from livekit.plugins import soniox
    from livekit.plugins.soniox.stt import SpeechStream

    from handler.resilience.stt_guard import StreamClosed

    class OneConnectionStream(SpeechStream):
        _connected_at: float | None = None
        _close_code: int | None = None

        async def _connect_ws(self) -> Any:
            if self._connected_at is not None:
                lived = time.monotonic() - self._connected_at
                raise StreamClosed(
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
        def stream(
            self, *, language: Any = NOT_GIVEN, conn_options: Any = DEFAULT_API_CONNECT_OPTIONS
        ) -> Any:
            return OneConnectionStream(stt=self, conn_options=conn_options)

    _one_connection_stt = OneConnectionSTT
    return OneConnectionSTT


def build(options: Mapping[str, Any], runtime: Any) -> Any:
    from livekit.plugins import soniox

    return _stt_class()(
        api_key=runtime.secret("SONIOX_API_KEY"),
        base_url=options["base_url"] or DEFAULT_URL,
        http_session=runtime.http_session,
        params=soniox.STTOptions(
            model=options["model"],
            language_hints=list(options["language_hints"]) or None,
            enable_language_identification=options["enable_language_identification"],
            max_endpoint_delay_ms=options["max_endpoint_delay_ms"],
        ),
    )
