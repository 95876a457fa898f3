"""The LiveKit worker: an `AgentServer` whose job processes pre-load the VAD, share one pooled HTTP
session, pre-warm provider connections, and build each job's session through the registry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from handler import config, livekit_compat
from handler import plan as plans
from handler.observe import logcontext, telemetry
from handler.pipeline.http import close_shared_session
from handler.pipeline.session import build, observe, prewarm_settled, start_warming
from handler.pipeline.worker_load import TreeLoad
from handler.plan import Plan
from handler.records import writer as records_writer
from handler.resilience.session_end import close_reason

if TYPE_CHECKING:
    from handler.registry import Registry

logger = logging.getLogger("handler.pipeline.worker")


def prewarm_process(proc: Any) -> None:
    """livekit's per-process setup (synchronous, before the job's event loop exists): load config,
    the VAD model and the turn detector (a model, for `smart-turn`) once. The HTTP pool needs the
    loop, so the entrypoint creates it."""
    plan = plans.load()
    plan.configure_logging()
    proc.userdata["plan"] = plan
    runtime = plan.runtime()
    proc.userdata["vad"] = plan.build("vad", runtime)
    proc.userdata["turn"] = plan.build("turn", runtime)


async def entrypoint(ctx: Any) -> None:
    plan: Plan = ctx.proc.userdata["plan"]
    settings = plan.settings
    logcontext.bind(**logcontext.job_ids(ctx.job))

    runtime = plan.runtime(pooled=True)
    # opens provider connections while the room connects, so turn one pays for neither
    warming = start_warming(plan, runtime)
    session, agent = build(plan, runtime, vad=ctx.proc.userdata["vad"], turn=ctx.proc.userdata["turn"])
    info = {"job": ctx.job.id, "room": ctx.job.room.name, "source": "start"}

    end_observation: Any = None

    async def shutdown(reason: str) -> None:
        try:
            if end_observation is not None:  # observers hear of an end only for a session they saw start
                info["ended"] = reason  # the call record's end reason
                end_observation()
        finally:  # a failing observer must not keep the session or the pool open
            if warming and not warming.done():
                warming.cancel()
            await session.aclose()
            await close_shared_session()
            # the session's spans end with it; the process exits without atexit (see flush)
            await asyncio.to_thread(telemetry.flush, settings.get("telemetry.export_timeout"))
            # the call record: delivered, or spooled to disk, before the process goes
            await asyncio.to_thread(records_writer.flush)
            logger.info("job ended: session and HTTP pool closed")

    ctx.add_shutdown_callback(shutdown)
    # one caller, one session: when it closes (the caller hung up, or a stage failed for good) the
    # job ends and the agent leaves, instead of staying until the server closes the room under it
    session.on("close", lambda ev: ctx.shutdown(reason=close_reason(session, ev)))
    # livekit keeps the session when the caller's connection dropped (they might resume); once the
    # server has given up on them too, nobody is left to talk to
    ctx.room.on("participant_disconnected", lambda p: _end_when_alone(ctx))
    await ctx.connect()
    await prewarm_settled(warming)
    _, end_observation = observe(session, settings, plan.registry, info)
    await session.start(agent=agent, room=ctx.room, room_options=room_options(settings))


def room_options(settings: config.Settings) -> Any:
    """How the session hears the caller: at the rate and frame size the VAD works in, so an end
    of speech is not held back by a 50 ms frame or resampled twice."""
    from livekit.agents.voice import room_io

    r = settings.section("room")
    return room_io.RoomOptions(
        audio_input=room_io.AudioInputOptions(
            sample_rate=r["input_sample_rate"], frame_size_ms=r["input_frame_ms"]
        )
    )


def _end_when_alone(ctx: Any) -> None:
    from livekit import rtc

    agent = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    if not [p for p in ctx.room.remote_participants.values() if p.kind != agent]:
        ctx.shutdown(reason="every caller left the room")


def _livekit_log_level(settings: config.Settings) -> str:
    # AgentServer accepts TRACE, DEBUG, INFO, WARN, ERROR, CRITICAL: "WARNING" raises ValueError
    level = str(settings.get("logging.level")).upper()
    return "WARN" if level == "WARNING" else level


JOB_MODULES = ("handler.pipeline.worker", "handler.pipeline.job_preload")
"""What a job process imports to run `entrypoint` (handler.pipeline.worker brings the session, the turn
tracker, telemetry and the resilience layer), and the one-time work it did in every call
(`handler.pipeline.job_preload`)."""


def preload_modules(plan: Plan | config.Settings, registry: Registry | None = None) -> list[str]:
    """Modules livekit's forkserver imports once, before it forks the job processes: ours and the
    plan's providers' (their SDKs, livekit plugins). Each job process otherwise imported them
    itself when its call started, on the call's event loop, about 1-2 CPU seconds a call
    (benchmarks/job_profile.py); inherited, they cost nothing and their memory is shared. Bare
    settings (with a registry, or none: ours only) are accepted for tests written before the plan."""
    resolved = plan if isinstance(plan, Plan) else plans.resolve(plan, registry) if registry else None
    return [*JOB_MODULES, *(resolved.preload_modules() if resolved is not None else [])]


def make_server(plan: Plan | config.Settings, metrics_dir: str | None = None) -> Any:
    """The worker's `AgentServer` (bare settings, as a test of its options passes, preload no
    provider module)."""
    from livekit.agents import AgentServer
    from livekit.agents.worker import ServerEnvOption

    settings = plan.settings if isinstance(plan, Plan) else plan
    w = settings.section("worker")
    server = AgentServer(
        # `dev` (livekit's devmode) takes any load, as livekit's own dev mode does
        load_threshold=ServerEnvOption(dev_default=math.inf, prod_default=w["load_threshold"]),
        # the worker's own CPU, not the machine's: a busy neighbour must not turn calls away
        load_fnc=TreeLoad(),
        num_idle_processes=w["num_idle_processes"],
        job_memory_warn_mb=w["job_memory_warn_mb"],
        job_memory_limit_mb=w["job_memory_limit_mb"],
        drain_timeout=w["drain_timeout"],
        port=w["port"],
        setup_fnc=prewarm_process,
        ws_url=settings.secret("LIVEKIT_URL"),
        api_key=settings.secret("LIVEKIT_API_KEY"),
        api_secret=settings.secret("LIVEKIT_API_SECRET"),
        log_level=_livekit_log_level(settings),
        prometheus_port=w["prometheus_port"] or None,
        prometheus_multiproc_dir=metrics_dir,
        preload_modules=preload_modules(plan),
    )
    server.rtc_session(entrypoint, agent_name=w["agent_name"])
    return server


@contextlib.contextmanager
def _metrics_dir(settings: config.Settings) -> Iterator[str | None]:
    """A temporary directory for prometheus_client's multi-process mode while /metrics is served.

    Turns happen in job processes and the main process serves /metrics; the two meet through
    files in PROMETHEUS_MULTIPROC_DIR, which a process must have in its environment before it
    imports prometheus_client. livekit sets it when the worker starts, before its forkserver
    starts, so every job process has it. This process imported prometheus_client long before
    (livekit does at import), so its own samples (livekit's gauges) are not exported
    unless the operator sets the variable before `start`; we then leave that directory to them.
    """
    if not settings.get("worker.prometheus_port") or "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="voice-handler-metrics-") as path:
        yield path


def run(plan: Plan, *, devmode: bool) -> None:
    """Run the worker until SIGINT/SIGTERM, then drain (production) and close."""
    settings = plan.settings
    # job processes load the same environment and checkout as this one
    os.environ[config.ENV_VAR] = settings.env
    os.environ[config.ROOT_VAR] = str(settings.root)
    # livekit's CLI installs its own root log handler; the logging plugin's takes its place so
    # format, levels and secret redaction are ours
    livekit_compat.use_our_logging(plan.configure_logging)
    # livekit's worker builds the same cached TLS context on its event loop as it starts (135 ms
    # under load, reported as "event loop blocked"): built here first, before the loop runs
    import handler.pipeline.job_preload  # noqa: F401

    # records a previous run (or a job process as it ended) spooled are delivered from here
    from handler.records import service as records_service

    records_service.start(settings, plan.registry)
    with _metrics_dir(settings) as metrics_dir:
        server = make_server(plan, metrics_dir)
        livekit_compat.run_worker(server, log_level=str(settings.get("logging.level")).upper(), dev=devmode)
    records_writer.close()
    # livekit logs "failed to connect" after its last attempt and returns normally; a supervisor
    # must see a failure, not a clean stop
    if livekit_compat.connection_failed(server):
        raise SystemExit(1)
