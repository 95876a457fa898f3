"""The session's ids as span attributes (`voice_handler.<id>`): what the telemetry setup stamps on
every span and the per-turn traces carry over from their session's span."""

from __future__ import annotations

from typing import Any

ID_PREFIX = "voice_handler."


def ids_of(span: Any) -> dict[str, Any]:
    """The `voice_handler.<id>` attributes a span carries ({} for a non-recording one)."""
    return {k: v for k, v in (getattr(span, "attributes", None) or {}).items() if k.startswith(ID_PREFIX)}
