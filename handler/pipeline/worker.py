"""The LiveKit worker: an `AgentServer` whose job processes pre-load the VAD, share one pooled HTTP
session, pre-warm provider connections, and build each job's session through the registry."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from handler import config, livekit_compat
from handler import plan as plans
from handler.observe import logcontext, metrics_files, telemetry
from handler.pipeline import job_signals, reconnect
from handler.pipeline.http import close_shared_session
from handler.pipeline.session import build, observe, prewarm_settled, start_warming
from handler.pipeline.worker_load import TreeLoad
from handler.plan import Plan
from handler.records import writer as records_writer
from handler.redaction import participant_id
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
    reconnect.quiet_room_reconnect_attempts()
    proc.userdata["plan"] = plan
    runtime = plan.runtime()
    proc.userdata["vad"] = plan.build("vad", runtime)
    proc.userdata["turn"] = plan.build("turn", runtime)


async def entrypoint(ctx: Any) -> None:
    plan: Plan = ctx.proc.userdata["plan"]
    settings = plan.settings
    logcontext.bind(**logcontext.job_ids(ctx.job, settings))

    runtime = plan.runtime(pooled=True)
    # opens provider connections while the room connects, so turn one pays for neither
    warming = start_warming(plan, runtime)
    session, agent = build(plan, runtime, vad=ctx.proc.userdata["vad"], turn=ctx.proc.userdata["turn"])
    info = {"job": ctx.job.id, "room": ctx.job.room.name, "source": "start"}
    room_watch = RoomWatch(ctx.room)

    end_observation: Any = None

    async def shutdown(reason: str) -> None:
        try:
            lost = room_watch.report()
            if end_observation is not None:  # observers hear of an end only for a session they saw start
                # the call record's end reason ("error" when the room was lost)
                info["ended"] = "error: lost the room (livekit-server went away)" if lost else reason
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
    # a SIP caller's identity is their number: their log lines name them by its pseudonym
    for p in ctx.room.remote_participants.values():
        participant_id(p.identity, settings)
    ctx.room.on("participant_connected", lambda p: participant_id(p.identity, settings))
    await prewarm_settled(warming)
    _, end_observation = observe(session, settings, plan.registry, info)
    await session.start(
        agent=agent,
        room=ctx.room,
        room_options=room_options(settings),
        # livekit's remote session sends each session event to the room as a data stream, each
        # an FFI request whose reply waiter sees every frame of the process: off unless wanted
        session_host=settings.get("room.session_host"),
    )


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


ROOM_LOST = ("UNKNOWN_REASON", "SIGNAL_CLOSE", "CONNECTION_TIMEOUT", "JOIN_FAILURE", "MEDIA_FAILURE")
"""Why a room connection can end that is neither the job's nor the server's decision: the server
went away (restarted, crashed, unreachable) and livekit's client could not get the room back."""


class RoomWatch:
    """Whether the job's room connection is down: livekit's client says when it starts to reconnect
    (the server went away or stalled) and when it is back. A job that ends while it is down lost
    its room: said once, at ERROR, by `report` (livekit's native client's own attempts and its
    "failed to reconnect" are WARNINGs: handler.pipeline.reconnect)."""

    def __init__(self, room: Any) -> None:
        from livekit import rtc

        self.down_since: float | None = None
        self.lost_reason: str | None = None
        self._reported = False

        def reconnecting() -> None:
            self.down_since = time.monotonic()
            logger.warning("lost the room connection; livekit is reconnecting")

        def reconnected() -> None:
            logger.info("room connection back after %.1f s", time.monotonic() - (self.down_since or 0.0))
            self.down_since = None

        def disconnected(reason: Any = None) -> None:
            name = rtc.DisconnectReason.Name(reason) if isinstance(reason, int) else str(reason)  # type: ignore[arg-type]
            if name in ROOM_LOST:
                self.lost_reason = name

        room.on("reconnecting", reconnecting)
        room.on("reconnected", reconnected)
        room.on("disconnected", disconnected)

    def report(self) -> bool:
        """Says (once) that the room was lost, if it was; whether it was."""
        if self.down_since is None and self.lost_reason is None:
            return False
        if self._reported:
            return True
        self._reported = True
        how = f"down {time.monotonic() - self.down_since:.1f} s" if self.down_since else self.lost_reason
        logger.error("lost the room: livekit-server went away mid-call and the room is gone (%s)", how)
        return True


def _end_when_alone(ctx: Any) -> None:
    from livekit import rtc

    agent = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    if not [p for p in ctx.room.remote_participants.values() if p.kind != agent]:
        ctx.shutdown(reason="every caller left the room")


def _livekit_log_level(settings: config.Settings) -> str:
    # AgentServer accepts TRACE, DEBUG, INFO, WARN, ERROR, CRITICAL: "WARNING" raises ValueError
    level = str(settings.get("logging.level")).upper()
    return "WARN" if level == "WARNING" else level


JOB_MODULES = ("handler.pipeline.job_signals", "handler.pipeline.worker", "handler.pipeline.job_preload")
"""What livekit's forkserver imports before it forks a job process: that the job processes leave a
stop signal to the worker (`handler.pipeline.job_signals`), what a job process imports to run
`entrypoint` (handler.pipeline.worker brings the session, the turn tracker, telemetry and the
resilience layer), and the one-time work it did in every call (`handler.pipeline.job_preload`)."""


def preload_modules(plan: Plan | config.Settings, registry: Registry | None = None) -> list[str]:
    """Modules livekit's forkserver imports once, before it forks the job processes: ours and the
    plan's providers' (their SDKs, livekit plugins). Each job process otherwise imported them
    itself when its call started, on the call's event loop, about 1-2 CPU seconds a call
    (measurements/job_profile.py); inherited, they cost nothing and their memory is shared. Bare
    settings (with a registry, or none: ours only) are accepted for tests written before the plan."""
    resolved = plan if isinstance(plan, Plan) else plans.resolve(plan, registry) if registry else None
    return [*JOB_MODULES, *(resolved.preload_modules() if resolved is not None else [])]


def make_server(plan: Plan | config.Settings, metrics_dir: str | None = None) -> Any:
    """The worker's `AgentServer` (bare settings, as a test of its options passes, preload no
    provider module)."""
    from livekit.agents import AgentServer, JobExecutorType
    from livekit.agents.worker import ServerEnvOption

    settings = plan.settings if isinstance(plan, Plan) else plan
    w = settings.section("worker")
    server = AgentServer(
        # one process per call, or one thread per call in this process: the trade-off is in
        # settings.toml and docs/capacity.md
        job_executor_type=JobExecutorType(w["job_executor"]),
        # livekit-server gone: livekit's attempts that span the configured time, then exit 1
        max_retry=reconnect.attempts_within(w["reconnect_give_up"]),
        # `dev` (livekit's devmode) takes any load, as livekit's own dev mode does
        load_threshold=ServerEnvOption(dev_default=math.inf, prod_default=w["load_threshold"]),
        # the worker's own CPU, not the machine's: a busy neighbour must not turn calls away
        load_fnc=TreeLoad(),
        num_idle_processes=w["num_idle_processes"],
        job_memory_warn_mb=w["job_memory_warn_mb"],
        job_memory_limit_mb=w["job_memory_limit_mb"],
        drain_timeout=w["drain_timeout"],
        # livekit's default is every interface: neither port asks who is calling
        host=w["host"],
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
    if settings.get("worker.job_executor") == "thread":
        # every call is a thread of this process: its samples are in this process's registry,
        # which livekit's /metrics serves when no directory is set
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
    # ...and leave a stop signal sent to the whole process group to this one (job_signals)
    os.environ[job_signals.MAIN_PID_VAR] = str(os.getpid())
    # livekit's CLI installs its own root log handler; the logging plugin's takes its place so
    # format, levels and secret redaction are ours
    livekit_compat.use_our_logging(plan.configure_logging)
    # livekit's worker builds the same cached TLS context on its event loop as it starts (135 ms
    # under load, reported as "event loop blocked"): built here first, before the loop runs
    import handler.pipeline.job_preload  # noqa: F401

    # one line when livekit-server is lost, one a minute while it stays away (pipeline/reconnect.py)
    logging.getLogger("livekit.agents").addFilter(
        reconnect.RetryReport(settings.get("worker.reconnect_give_up"))
    )

    if settings.get("worker.job_executor") == "thread":
        # the jobs run here: livekit plugins register only on the main thread, and what the
        # forkserver would have imported once is imported once here, before the first call
        for module in preload_modules(plan):
            importlib.import_module(module)

    # records a previous run (or a job process as it ended) spooled are delivered from here
    from handler.records import service as records_service

    records_service.start(settings, plan.registry)
    with _metrics_dir(settings) as metrics_dir:
        server = make_server(plan, metrics_dir)
        # every job process leaves its sample files there: dead ones' are folded as the worker runs
        shared = metrics_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        served = shared if settings.get("worker.prometheus_port") else None
        with metrics_files.bounded(served) if served else contextlib.nullcontext():
            livekit_compat.run_worker(
                server, log_level=str(settings.get("logging.level")).upper(), dev=devmode
            )
    records_writer.close()
    # livekit logs "failed to connect" after its last attempt and returns normally; a supervisor
    # must see a failure, not a clean stop
    if livekit_compat.connection_failed(server):
        raise SystemExit(1)
