"""STT `soniox`: livekit's Soniox plugin over its real-time websocket, on the shared HTTP pool.

With `manual_finalization` (the default) the stream declares livekit's `manual_flush`
capability and answers livekit's flush with Soniox's manual finalization (`{"type":
"finalize"}`: Soniox finalizes the pending tokens and sends them final, then a `<fin>` token,
which the plugin already treats as an endpoint). livekit-agents 1.8 flushes a manual-flush STT
at the VAD's end of speech (turn detection "vad"; with an end-of-turn model, when it predicts
the end), so the turn's final transcript arrives the provider's latency after the VAD's
silence window, not after Soniox's own endpoint (`max_endpoint_delay_ms` of silence, then its
latency): the VAD's window, and so `vad.min_silence_duration`, is what sets the end of turn.
The plugin itself declares no flush and drops livekit's flush sentinels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handler.api import Register, Runtime, hookimpl, table

DEFAULT_URL = "wss://stt-rt.soniox.com/transcribe-websocket"


OPTIONS = """\
model = "stt-rt-v5"                    # Soniox real-time model
base_url = ""                          # websocket URL; empty = Soniox's own
max_endpoint_delay_ms = 500            # endpoint detection: ms of silence before Soniox finalizes (500-3000)
manual_finalization = true             # finalize when the VAD ends speech (Soniox's {"type": "finalize"}):
                                       # the transcript comes then, not after max_endpoint_delay_ms
enable_language_identification = true  # tag each token with its language
"""
"""`[stt.soniox]`: this provider's options, their defaults and why. The lowest layer of the table:
every settings file changes them; `config show` lists them, labelled with this plugin."""


@hookimpl(trylast=True)
def register_providers(register: Register):
    register(
        "stt",
        "soniox",
        build,
        secrets=("SONIOX_API_KEY",),
        endpoints=lambda o: [o["base_url"] or DEFAULT_URL],
        validate=_validate,
        preload=("livekit.plugins.soniox", "handler.resilience.stt_guard"),
        **table(OPTIONS),
    )


def _validate(options: Mapping[str, Any]) -> list[str]:
    errors = []
    delay = options["max_endpoint_delay_ms"]
    if not 500 <= delay <= 3000:
        errors.append("max_endpoint_delay_ms: must be a whole number from 500 to 3000 (Soniox's range)")
    if not isinstance(options["manual_finalization"], bool):
        errors.append("manual_finalization: must be true or false")
    return errors


FINALIZE_MESSAGE = '{"type": "finalize"}'
"""Soniox's manual finalization request (real-time API, "Manual finalization")."""


def _stt_class() -> Any:
    """livekit's Soniox STT whose stream is one connection and answers livekit's flush with
    FINALIZE_MESSAGE (handler/livekit_compat.py has how, since it reaches the plugin's internals):
    where the plugin would reconnect by itself when the provider closes the socket, it raises
    `StreamClosed`, so the resilience layer counts the attempt and replays the utterance in flight
    (handler/resilience/stt_guard.py). Built on first use: livekit stays out of the configuration
    commands' imports."""
    from handler.api import StreamClosed, livekit_compat

    return livekit_compat.soniox_one_connection_stt(FINALIZE_MESSAGE, StreamClosed)


def build(options: Mapping[str, Any], runtime: Runtime) -> Any:
    from livekit.plugins import soniox

    return _stt_class()(
        api_key=runtime.secret("SONIOX_API_KEY"),
        base_url=options["base_url"] or DEFAULT_URL,
        http_session=runtime.http_session,
        manual_finalization=options["manual_finalization"],
        params=soniox.STTOptions(
            model=options["model"],
            language_hints=list(options["language_hints"]) or None,
            enable_language_identification=options["enable_language_identification"],
            max_endpoint_delay_ms=options["max_endpoint_delay_ms"],
        ),
    )
