"""The resolved plan -> a livekit `AgentSession` and its `Agent`.

The one code path that builds a session, used by the worker's job entrypoint and by `simulate`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

from handler.pipeline.http import prewarm
from handler.pipeline.turns import TurnTracker
from handler.plan import Plan, resolve
from handler.resilience import fallback

if TYPE_CHECKING:
    from handler.config import Settings
    from handler.pipeline.retry import RetryPolicy
    from handler.pipeline.runtime import Runtime
    from handler.registry import Registry

logger = logging.getLogger("handler.pipeline.session")

PREWARM_WAIT = 1.0
"""Seconds a session's start waits at most for the pre-warm (a healthy host answers well within)."""
NEUTRAL_THRESHOLD = 0.5
"""The interruption threshold at which `min_interruption_duration` applies unscaled."""


def min_interruption_duration(settings: Settings) -> float:
    """INTERRUPTION_THRESHOLD (0..1, higher = less sensitive) as livekit 1.8's knob: the user must
    speak over the agent for `min_interruption_duration * threshold / 0.5` seconds before it yields.
    0.5 keeps the configured duration; 0.8 needs 1.6x as long; 0.9 1.8x; 0 interrupts at once."""
    return settings.get("turn.min_interruption_duration") * (
        settings.get("turn.interruption_threshold") / NEUTRAL_THRESHOLD
    )


def turn_handling(plan: Plan, detection: Any) -> dict[str, Any]:
    """`TurnHandlingOptions` from config, with turn detection and interruption mode always explicit
    (left out, livekit picks cloud models that stall offline). `detection` is the built `turn`
    stage: a mode's name ("vad", "stt") or a turn-detector object."""
    settings = plan.settings
    t = settings.section("turn")
    # the detector's table may set its own hold (`[turn.smart-turn] max_endpointing_delay`)
    own = plan.stage("turn").primary.options
    return {
        "turn_detection": detection,
        "endpointing": {
            "mode": t["endpointing_mode"],
            "min_delay": t["min_endpointing_delay"],
            "max_delay": own["max_endpointing_delay"],
        },
        "interruption": {
            "enabled": t["interruptions_enabled"],
            "mode": "vad",
            "min_duration": min_interruption_duration(settings),
            "min_words": t["min_interruption_words"],
            "false_interruption_timeout": t["false_interruption_timeout"] or None,
            "resume_false_interruption": t["resume_false_interruption"],
        },
        "preemptive_generation": {"enabled": t["preemptive_generation"]},
    }


def start_warming(plan: Plan, runtime: Runtime) -> asyncio.Task[int] | None:
    """When `http.prewarm` is on, open a pooled connection to each aiohttp provider's host in the
    background, so it overlaps the job's other setup (the room connection, in the worker). The
    providers then warm their own channel when the session starts (livekit calls each component's
    prewarm(): the ElevenLabs websocket reuses that connection; OpenAI lists models on its own pool),
    and Soniox's stream opens when the session starts."""
    if not plan.prewarm or runtime.http_session is None:
        return None
    return asyncio.create_task(prewarm(runtime.http_session, plan.retry, plan.endpoints()))


async def prewarm_settled(warming: asyncio.Task[int] | None) -> None:
    """Before the session starts: give the pre-warm up to PREWARM_WAIT seconds more, so the
    providers' channels reuse its connections instead of racing them with second ones. A slow or
    unreachable host does not hold the session longer (the pre-warm carries on in the background)."""
    if warming is not None and not warming.done():
        await asyncio.wait({warming}, timeout=PREWARM_WAIT)


def _no_prewarm(*args: Any, **kwargs: Any) -> None:
    return None


def redirect_log_lines(stream: Any) -> None:
    """Point the logging policy's stderr handlers at `stream`: the same lines at the same levels,
    out of the way of a command's own output (`simulate`'s table, `bench`'s progress)."""
    import sys

    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, sys.__stderr__):
            handler.setStream(stream)


def build(plan: Plan, runtime: Runtime, *, vad: Any = None, turn: Any = None) -> tuple[Any, Any]:
    """Build every stage of the plan and assemble the session and its agent. `vad` and `turn`
    (detection) may come pre-loaded from the worker's prewarm."""
    from livekit.agents import Agent, AgentSession
    from livekit.agents.voice.agent_session import SessionConnectOptions

    from handler.resilience import decider, ledger
    from handler.resilience import stages as resilient

    settings = plan.settings
    vad = vad if vad is not None else plan.build("vad", runtime)
    turn = turn if turn is not None else plan.build("turn", runtime)
    faults = ledger.FaultLedger()
    members: dict[str, list[Any]] = {}
    stages = {
        s: fallback.build(plan, s, runtime, vad=vad, ledger=faults, members=members) for s in fallback.STAGES
    }
    if not plan.prewarm:
        # off means off: livekit's own per-component prewarm() (OpenAI lists models on its pool,
        # ElevenLabs opens its websocket) would otherwise still open connections before they're needed
        for stage in stages.values():
            stage.prewarm = _no_prewarm
    conn = {s: fallback.session_conn_options(stages[s], runtime) for s in stages}
    session: Any = AgentSession(
        vad=vad,
        stt=stages["stt"],
        llm=stages["llm"],
        tts=stages["tts"],
        # a plain dict of TurnHandlingOptions' keys
        turn_handling=cast(Any, turn_handling(plan, turn)),
        aec_warmup_duration=settings.get("turn.aec_warmup_duration") or None,
        conn_options=SessionConnectOptions(
            stt_conn_options=conn["stt"],
            llm_conn_options=conn["llm"],
            tts_conn_options=conn["tts"],
            # the decider ends a call whose stage is down for good; livekit's count would end a burst
            max_unrecoverable_errors=decider.LIVEKIT_ERROR_LIMIT,
        ),
    )
    agent = Agent(instructions=settings.get("llm.instructions"))
    # no silent failures: every provider's faults counted, a stage down for good decided on
    resilient.watch(stages, members, faults)
    ledger.attach(session, faults)
    r = plan.resilience
    tts = plan.stage("tts")
    decider.Decider(
        session,
        faults,
        down_for=r.down_for,
        apology=r.apology,
        apology_timeout=r.apology_timeout,
        probe_initial=r.probe_initial,
        probe_max=r.probe_max,
        hold_line=r.hold_line,
        hold_after=r.hold_after,
        providers=members,
        # a lone TTS known to be down cannot say the apology (a chain's backup still can)
        tts_breaker=None if tts.chained else resilient.breaker(tts.primary, r),
    )
    return session, agent


# ---------------------------------------------------------------- for callers holding settings and a registry
# (tests and benchmarks written before the plan): each resolves the plan and delegates


def retry_policy(settings: Settings, registry: Registry) -> RetryPolicy:
    return resolve(settings, registry).retry


def make_runtime(settings: Settings, registry: Registry, http_session: Any = None) -> Runtime:
    """Inside a running event loop: the shared HTTP pool and the retry policy's connect options."""
    return resolve(settings, registry).runtime(http_session, pooled=True)


def start_prewarm(settings: Settings, registry: Registry, runtime: Runtime) -> asyncio.Task[int] | None:
    return start_warming(resolve(settings, registry), runtime)


def configure_logging(settings: Settings, registry: Registry) -> None:
    resolve(settings, registry).configure_logging()


def build_session(
    settings: Settings, registry: Registry, runtime: Runtime, *, vad: Any = None, turn: Any = None
) -> tuple[Any, Any]:
    return build(resolve(settings, registry), runtime, vad=vad, turn=turn)


def observe(
    session: Any, settings: Settings, registry: Registry, info: Mapping[str, Any]
) -> tuple[TurnTracker, Callable[[], None]]:
    """Follow the session with the one turn tracker and tell observer plugins (metrics, ...) that
    it runs and each turn it completes. Returns the tracker and the function to call once when
    the session ends (observers then get the summary and `session_ended`)."""
    hook = registry.pm.hook
    if settings.get("records.sinks"):  # the call record's writer (its threads), once per process
        from handler.records import writer

        writer.ensure(settings, registry)
    tracker = TurnTracker(session, on_turn=lambda record: hook.turn_completed(record=record, info=info))
    hook.session_started(session=session, settings=settings, info=info)

    def end() -> None:
        tracker.detach()
        try:
            hook.session_summary(summary=tracker.summary(), info=info)
        finally:
            hook.session_ended(session=session, settings=settings, info=info)

    return tracker, end


@asynccontextmanager
async def observed(
    session: Any, settings: Settings, registry: Registry, info: Mapping[str, Any]
) -> AsyncIterator[TurnTracker]:
    """`observe` for the length of a block; yields the tracker."""
    tracker, end = observe(session, settings, registry, info)
    try:
        yield tracker
    finally:
        end()
