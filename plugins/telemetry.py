"""Observer: turns on OpenTelemetry export (handler.telemetry) in whichever process runs a session:
`start`'s job processes, `simulate`, and the worker `call` talks to. Off (nothing imported) unless
`telemetry.endpoint` is set."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handler.hookspecs import hookimpl


@hookimpl(tryfirst=True)  # before the session starts its first span
def session_started(session: Any, settings: Any, info: Mapping[str, Any]) -> None:
    from handler import telemetry

    telemetry.install(settings)
