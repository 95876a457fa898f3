"""Observer: turns on OpenTelemetry export (handler.observe.telemetry) in whichever process runs a session:
`start`'s job processes, `simulate`, and the worker `call` talks to. Off (nothing imported) unless
`telemetry.endpoint` is set."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handler.api import hookimpl


@hookimpl(tryfirst=True)  # before the session starts its first span
def session_started(session: Any, settings: Any, info: Mapping[str, Any]) -> None:
    from handler.api import telemetry

    telemetry.install(settings)


@hookimpl
def session_ended(session: Any, settings: Any, info: Mapping[str, Any]) -> None:
    from handler.api import telemetry

    if not telemetry.enabled(settings):
        return
    from livekit.agents import get_job_context
    from livekit.agents.telemetry import otel_metrics

    # livekit records its per-turn latency histograms (lk.agents.turn.*) from the session's history
    # when a job's session ends; a session with no job (simulate) would never record them
    if get_job_context(required=False) is None:
        otel_metrics.flush_turn_metrics(session.history)
