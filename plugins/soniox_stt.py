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
    )


def _validate(options: Mapping[str, Any]) -> list[str]:
    delay = options["max_endpoint_delay_ms"]
    if not 500 <= delay <= 3000:
        return ["max_endpoint_delay_ms: must be a whole number from 500 to 3000 (Soniox's range)"]
    return []


def build(options: Mapping[str, Any], runtime: Any) -> Any:
    from livekit.plugins import soniox

    return soniox.STT(
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
