"""`python -m handler loadtest`: how many calls one worker carries on this machine, and what a call costs.

For each concurrency level, that many callers (`handler.room.caller.Call`, the `call` machinery)
talk to the worker at once, their starts spread over `--ramp` seconds. Per level: client-side
TTFA p50/p95, calls completed and failed, the worker's CPU per call (its whole process tree, job
processes included, in cores: CPU seconds over call seconds), the peak RSS of one job process, and
the load livekit reports (the worker's `/worker` endpoint). The capacity is the largest level whose
p95 stays within 1.2x the single call's, with no failed call.

With no LIVEKIT_URL, it runs everything here: a livekit-server on 127.0.0.1, one worker
(`python -m handler start`, the environment's cloud stack) and the provider servers in load mode:
no recognition or synthesis per request (the recognizer names the scenario phrase whose length
matches the utterance; the TTS sends a tone as long as the reply), the cloud latency profile
unchanged. So what the machine spends is the worker's; the callers', the server's and the
providers' CPU is reported apart. With LIVEKIT_URL set, the callers call that deployment and only
client-side numbers are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import psutil

from handler import audio
from handler.pipeline.turns import percentile
from handler.pipeline.worker_load import process_tree
from handler.room.caller import Call, CallError, Target
from handler.sim.scenario import Scenario

TTFA_TOLERANCE = 1.2
"""A level is within capacity while its p95 TTFA stays under this multiple of one call's."""
SAMPLE_INTERVAL = 0.5
LOAD_REPLY = "It is sunny and warm today, about twenty degrees."
"""The LLM's canned answer in load mode: a typical one-sentence reply."""


@dataclass
class Level:
    concurrency: int
    calls: int
    completed: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    ttfa_p50: float | None = None
    ttfa_p95: float | None = None
    call_seconds: float = 0.0
    worker_cpu_s: float | None = None
    cpu_per_call: float | None = None
    """The worker's CPU seconds per second of call: cores one call keeps busy."""
    job_rss_peak_mb: float | None = None
    job_uss_peak_mb: float | None = None
    """Memory unique to one job process (RSS counts the pages it shares with the forkserver)."""
    pss_per_call_mb: float | None = None
    """The worker tree's proportional memory (PSS, every process's shared pages split between
    them) at its peak in the level, over what it held idle before the first level, per call:
    comparable between the process and the thread executor."""
    livekit_load_max: float | None = None
    other_cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds of what is not the worker: callers, livekit-server, provider servers."""


# ----------------------------------------------------------------------------- cores


@dataclass(frozen=True)
class CoreSplit:
    """Which CPUs the worker's process tree may run on, and which everything else (the callers,
    livekit-server, the provider servers) may: so the worker's cost is measured on cores of its
    own, not mixed with what drives it."""

    worker: tuple[int, ...]
    others: tuple[int, ...]

    def describe(self) -> str:
        return (
            f"worker's process tree on CPU {_cpus(self.worker)} ({len(self.worker)} core"
            f"{'s' if len(self.worker) > 1 else ''}); callers, livekit-server and provider servers on "
            f"CPU {_cpus(self.others)} (sched_setaffinity)"
        )


def _cpus(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cpus)


def split_cores(worker_cores: int) -> CoreSplit:
    """The last `worker_cores` of the CPUs this process may use for the worker, the rest for the
    others; ValueError (the message says what is allowed) when that leaves nothing for either."""
    import os

    if not hasattr(os, "sched_setaffinity"):
        raise ValueError("--worker-cores needs Linux (sched_setaffinity)")
    mine = tuple(sorted(os.sched_getaffinity(0)))
    if not 1 <= worker_cores < len(mine):
        raise ValueError(
            f"--worker-cores {worker_cores}: this process may use {len(mine)} CPUs ({_cpus(mine)}); the "
            f"worker needs at least 1 and the callers at least 1, so 1 to {len(mine) - 1}"
        )
    return CoreSplit(worker=mine[-worker_cores:], others=mine[:-worker_cores])


@contextlib.contextmanager
def pinned(cpus: tuple[int, ...] | None) -> Iterator[None]:
    """This process (and what it starts from here on: livekit-server, the provider servers'
    thread) on `cpus`, restored after."""
    import os

    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# ----------------------------------------------------------------------------- measuring


class Meter:
    """Samples, in a thread, the CPU of the worker's process tree and of the other parties, the RSS
    of each job process, and the load the worker reports."""

    def __init__(
        self, worker_pid: int | None, server_pid: int | None, fakes_thread: int | None, health_url: str | None
    ) -> None:
        self.worker = psutil.Process(worker_pid) if worker_pid else None
        self.server = psutil.Process(server_pid) if server_pid else None
        self.fakes_thread = fakes_thread
        self.health_url = health_url
        self._cpu: dict[int, float] = {}
        """Last CPU seconds seen per process of the worker's tree (exited ones keep their last)."""
        self.rss_peak = self.uss_peak = 0.0
        self.tree_pss = self.tree_pss_peak = 0.0
        self.idle_pss: float | None = None
        """The tree's PSS before the first level: the worker with no call."""
        self.load_max = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        if self.worker is not None:
            pss = 0.0
            for p in process_tree(self.worker):
                with contextlib.suppress(psutil.NoSuchProcess):
                    t = p.cpu_times()
                    self._cpu[p.pid] = t.user + t.system
                    mem = p.memory_full_info()
                    pss += mem.pss / 2**20
                    if p.pid != self.worker.pid:
                        self.rss_peak = max(self.rss_peak, mem.rss / 2**20)
                        self.uss_peak = max(self.uss_peak, mem.uss / 2**20)
            self.tree_pss = pss
            self.tree_pss_peak = max(self.tree_pss_peak, pss)
        if self.health_url:
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(self.health_url, timeout=1) as r,
            ):
                self.load_max = max(self.load_max, float(json.loads(r.read()).get("worker_load", 0.0)))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self.sample()

    def worker_cpu(self) -> float:
        return sum(self._cpu.values())

    def others(self) -> dict[str, float]:
        me = psutil.Process()
        t = me.cpu_times()
        fakes = 0.0
        for th in me.threads():
            if th.id == self.fakes_thread:
                fakes = th.user_time + th.system_time
        out = {"callers": t.user + t.system - fakes}
        if self.fakes_thread is not None:
            out["provider servers"] = fakes
        if self.server is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                s = self.server.cpu_times()
                out["livekit-server"] = s.user + s.system
        return out

    @contextlib.contextmanager
    def level(self, result: Level) -> Iterator[None]:
        """Measures one level: deltas of CPU, peaks of RSS and load."""
        self.sample()
        if self.idle_pss is None and self.worker is not None:
            self.idle_pss = self.tree_pss
        cpu0, others0 = self.worker_cpu(), self.others()
        self.rss_peak = self.uss_peak = self.load_max = self.tree_pss_peak = 0.0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join(5)
            self.sample()
            if self.worker is not None:
                result.worker_cpu_s = round(self.worker_cpu() - cpu0, 2)
                result.job_rss_peak_mb = round(self.rss_peak, 1)
                result.job_uss_peak_mb = round(self.uss_peak, 1)
                if self.idle_pss is not None:
                    grown = self.tree_pss_peak - self.idle_pss
                    result.pss_per_call_mb = round(max(grown, 0.0) / result.concurrency, 1)
            if self.health_url:
                result.livekit_load_max = round(self.load_max, 2)
            result.other_cpu_s = {k: round(v - others0.get(k, 0.0), 2) for k, v in self.others().items()}


# ----------------------------------------------------------------------------- load-mode providers


def duration_recognizer(clips: dict[str, np.ndarray]) -> Callable[[bytes], str]:
    """Names the phrase whose spoken length is nearest the utterance's: known transcripts for
    known audio, at the cost of a subtraction."""
    lengths = {text: (len(pcm) / audio.RATE) - audio.trailing_silence(pcm) for text, pcm in clips.items()}

    def recognize(pcm_16k: bytes) -> str:
        seconds = len(pcm_16k) / 2 / audio.RATE
        return min(lengths, key=lambda text: abs(lengths[text] - seconds))

    return recognize


@contextlib.asynccontextmanager
async def load_mode_servers(
    recognizer: Callable[[bytes], str],
    responder: Callable[[list[dict[str, Any]]], str] = lambda messages: LOAD_REPLY,
    profiles: Mapping[str, Any] | None = None,
) -> AsyncIterator[dict[str, str]]:
    """The Soniox, OpenAI and ElevenLabs servers with the cloud latency profile (or `profiles`)
    and no costly per-request work: `recognizer` names what was said, `responder` answers
    (default: a canned reply), the TTS sends a tone as long as the text. Yields the settings that
    point a session at them."""
    from handler.fakes import ElevenLabsServer, OpenAIServer, SonioxServer
    from handler.sim import cloudsim

    profiles = profiles or cloudsim.PROFILES
    async with (
        SonioxServer(recognizer=recognizer, profile=profiles["stt"]) as stt,
        OpenAIServer(responder=responder, profile=profiles["llm"]) as llm,
        ElevenLabsServer(profile=profiles["tts"]) as tts,  # a tone as long as the text
    ):
        yield {
            cloudsim.BASE_URL["stt"]: stt.base_url,
            cloudsim.BASE_URL["llm"]: llm.base_url,
            cloudsim.BASE_URL["tts"]: tts.base_url,
        }


# ----------------------------------------------------------------------------- the levels


async def run_level(
    result: Level,
    target: Target,
    scenario: Scenario,
    clips: list[np.ndarray],
    ramp: float,
    progress: Callable[[str], None],
) -> list[float]:
    """Fills `result` with what the callers saw; returns every turn's TTFA."""
    concurrency, calls = result.concurrency, result.calls
    gate = asyncio.Semaphore(concurrency)
    ttfas: list[float] = []

    async def one(i: int) -> None:
        async with gate:
            if i < concurrency:  # the first wave starts spread over the ramp
                await asyncio.sleep(ramp * i / concurrency)
            c = Call(target, scenario, clips, lambda line: None, agent_timeout=60.0)
            try:
                await c.run()
            except CallError as e:
                result.failed += 1
                result.failures.append(str(e))
                return
            answered = [t.ttfa for t in c.turns if t.ttfa is not None]
            if c.failure is not None or c.errors or len(answered) < len(scenario.turns):
                result.failed += 1
                result.failures.append(str(c.failure or (c.errors or ["a turn went unanswered"])[0]))
            else:
                result.completed += 1
            ttfas.extend(answered)
            result.call_seconds += time.monotonic() - c.clock.start
            progress(f"  level {concurrency}: call {i + 1}/{calls} done")

    await asyncio.gather(*(one(i) for i in range(calls)))
    p50, p95 = percentile(ttfas, 50), percentile(ttfas, 95)
    result.ttfa_p50 = None if p50 is None else round(p50, 3)
    result.ttfa_p95 = None if p95 is None else round(p95, 3)
    return ttfas


def capacity(levels: list[Level]) -> Level | None:
    """The largest level within TTFA_TOLERANCE of one call's p95, with no failed call."""
    single = next((lv for lv in levels if lv.concurrency == 1), None)
    if single is None or single.ttfa_p95 is None:
        return None
    ok = [
        lv
        for lv in levels
        if lv.failed == 0 and lv.ttfa_p95 is not None and lv.ttfa_p95 <= TTFA_TOLERANCE * single.ttfa_p95
    ]
    return max(ok, key=lambda lv: lv.concurrency, default=None)


def per_worker_core(best: Level | None, cores: CoreSplit | None) -> float | None:
    """Calls per worker core: the capacity over the worker's own cores (None without a split)."""
    if best is None or cores is None:
        return None
    return round(best.concurrency / len(cores.worker), 2)


def to_dict(
    levels: list[Level], best: Level | None, where: str, cores: CoreSplit | None = None
) -> dict[str, Any]:
    return {
        "target": where,
        "levels": [asdict(lv) for lv in levels],
        "capacity": None if best is None else best.concurrency,
        "ttfa_tolerance": TTFA_TOLERANCE,
        "cores": None if cores is None else {"worker": cores.worker, "others": cores.others},
        "calls_per_worker_core": per_worker_core(best, cores),
    }


def render(levels: list[Level], best: Level | None, where: str, cores: CoreSplit | None = None) -> str:
    ms = lambda v: "-" if v is None else f"{v * 1000:.0f}"  # noqa: E731
    num = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    single = next((lv for lv in levels if lv.concurrency == 1), None)
    lines = [
        f"loadtest against {where}",
        *([f"cores: {cores.describe()}"] if cores else []),
        f"{'calls at once':>13} {'ok':>4} {'failed':>6} {'ttfa p50':>8} {'ttfa p95':>8} {'p95 x1':>6} "
        f"{'worker cores/call':>17} {'PSS/call MB':>11} {'job RSS/USS MB':>14} {'lk load':>7}  other CPU s",
    ]
    for lv in levels:
        ratio = (
            f"{lv.ttfa_p95 / single.ttfa_p95:.2f}"
            if single and single.ttfa_p95 and lv.ttfa_p95 is not None
            else "-"
        )
        others = ", ".join(f"{k} {v}" for k, v in lv.other_cpu_s.items())
        lines.append(
            f"{lv.concurrency:>13} {lv.completed:>4} {lv.failed:>6} "
            f"{ms(lv.ttfa_p50):>8} {ms(lv.ttfa_p95):>8} "
            f"{ratio:>6} {num(lv.cpu_per_call, '.3f'):>17} {num(lv.pss_per_call_mb, '.0f'):>11} "
            f"{num(lv.job_rss_peak_mb or None, '.0f') + '/' + num(lv.job_uss_peak_mb or None, '.0f'):>14} "
            f"{num(lv.livekit_load_max, '.2f'):>7}  {others}"
        )
        lines += [f"    failed: {f}" for f in lv.failures[:3]]
    if best is None:
        lines.append("capacity: none of the levels kept p95 TTFA within 1.2x one call's with no failure")
    else:
        lines.append(
            f"capacity on this machine: {best.concurrency} concurrent calls (p95 {ms(best.ttfa_p95)} ms, "
            f"within {TTFA_TOLERANCE}x one call's, no failure)"
        )
        if cores is not None:
            lines.append(
                f"calls per worker core: {per_worker_core(best, cores)} ({best.concurrency} calls on "
                f"{len(cores.worker)} worker core{'s' if len(cores.worker) > 1 else ''})"
            )
    costs = [lv.cpu_per_call for lv in levels if lv.cpu_per_call is not None]
    rss = [lv.job_rss_peak_mb for lv in levels if lv.job_rss_peak_mb]
    uss = [lv.job_uss_peak_mb for lv in levels if lv.job_uss_peak_mb]
    if costs:
        lines.append(
            f"per call: {min(costs):.3f}-{max(costs):.3f} worker cores (CPU seconds per call second, "
            "job processes included)"
            + (f"; a job process peaks at {max(rss):.0f} MB RSS, {max(uss):.0f} MB own (USS)" if rss else "")
        )
    measured = [lv for lv in levels if lv.cpu_per_call is not None]
    top = max(measured, key=lambda lv: lv.concurrency, default=None)
    if top is not None and cores is not None and top.cpu_per_call:
        lines.append(
            f"at the highest level measured ({top.concurrency} calls): {top.cpu_per_call:.3f} worker cores a "
            f"call, {num(top.pss_per_call_mb, '.0f')} MB PSS a call; projected from that cost, "
            f"{len(cores.worker) / top.cpu_per_call:.1f} calls would fill the worker's "
            f"{len(cores.worker)} core{'s' if len(cores.worker) > 1 else ''}"
        )
    return "\n".join(lines)


def render_executors(runs: list[tuple[str, list[Level], Level | None]], cores: CoreSplit | None) -> str:
    """The executors side by side: capacity, calls per worker core, per-call cost at the highest
    level each measured."""
    lines = [
        "executors compared" + (f" ({cores.describe()})" if cores else "") + ":",
        f"{'executor':>9} {'capacity':>8} {'calls/worker core':>17} {'at level':>8} "
        f"{'worker cores/call':>17} {'PSS/call MB':>11}",
    ]
    for name, levels, best in runs:
        measured = [lv for lv in levels if lv.cpu_per_call is not None]
        top = max(measured, key=lambda lv: lv.concurrency, default=None)
        per_core = per_worker_core(best, cores)
        capacity_ = "-" if best is None else best.concurrency
        lines.append(
            f"{name:>9} {capacity_:>8} {'-' if per_core is None else per_core:>17} "
            f"{'-' if top is None else top.concurrency:>8} "
            f"{'-' if top is None else format(top.cpu_per_call, '.3f'):>17} "
            f"{'-' if top is None or top.pss_per_call_mb is None else format(top.pss_per_call_mb, '.0f'):>11}"
        )
    return "\n".join(lines)


def plot(levels: list[Level], ttfas: dict[int, list[float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    conc = [lv.concurrency for lv in levels]
    left.boxplot([[v * 1000 for v in ttfas[c]] or [0] for c in conc], labels=[str(c) for c in conc])
    left.set_xlabel("concurrent calls")
    left.set_ylabel("time to first audio (ms)")
    right.plot(conc, [lv.cpu_per_call or 0 for lv in levels], marker="o")
    right.set_xlabel("concurrent calls")
    right.set_ylabel("worker cores per call")
    fig.tight_layout()
    fig.savefig(path)


# ----------------------------------------------------------------------------- the run


async def loadtest(
    settings: Any,
    registry: Any,
    scenario: Scenario,
    concurrency: list[int],
    calls: int,
    ramp: float,
    progress: Callable[[str], None],
    *,
    cores: CoreSplit | None = None,
    worker_overrides: Mapping[str, Any] | None = None,
) -> tuple[list[Level], Level | None, str, dict[int, list[float]]]:
    """Every level in turn (1 first, for the reference p95); a local server, worker (its settings
    plus `worker_overrides`) and providers unless LIVEKIT_URL names a deployment; with `cores`, the
    worker on cores of its own."""
    from handler.sim.clips import make_clips

    clips = await make_clips(scenario, registry, settings)
    levels = sorted({1, *concurrency})
    with pinned(cores.others if cores else None):
        return await _levels(
            settings, scenario, clips, levels, calls, ramp, progress, cores, worker_overrides
        )


async def _levels(
    settings: Any,
    scenario: Scenario,
    clips: list[np.ndarray],
    levels: list[int],
    calls: int,
    ramp: float,
    progress: Callable[[str], None],
    cores: CoreSplit | None,
    worker_overrides: Mapping[str, Any] | None,
) -> tuple[list[Level], Level | None, str, dict[int, list[float]]]:
    async with deployment(
        settings, scenario, clips, progress, worker_overrides, worker_cpus=cores.worker if cores else None
    ) as (target, meter, where):
        results: list[Level] = []
        ttfas: dict[int, list[float]] = {}
        for n in levels:
            progress(f"level {n}: {max(n, calls)} calls, {n} at once")
            level = Level(concurrency=n, calls=max(n, calls))
            with meter.level(level):
                ttfas[n] = await run_level(level, target, scenario, clips, ramp, progress)
            if level.worker_cpu_s is not None and level.call_seconds:
                level.cpu_per_call = round(level.worker_cpu_s / level.call_seconds, 3)
            results.append(level)
    return results, capacity(results), where, ttfas


@contextlib.asynccontextmanager
async def deployment(
    settings: Any,
    scenario: Scenario,
    clips: list[np.ndarray],
    progress: Callable[[str], None],
    worker_overrides: Mapping[str, Any] | None = None,
    keep_log: str | None = None,
    worker_cpus: tuple[int, ...] | None = None,
    *,
    said: Mapping[str, np.ndarray] | None = None,
    worker_env: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[Target, Meter, str]]:
    """The callers' target and a meter on it: LIVEKIT_URL's deployment, or a livekit-server, one
    worker (its settings plus `worker_overrides`, on `worker_cpus` if given, with `worker_env` in
    its environment) and load-mode providers started here, whose recognizer knows `scenario`'s
    phrases and `said`'s (text: its audio)."""
    agent_name = settings.get("worker.agent_name")
    if settings.secret("LIVEKIT_URL"):
        target = Target(
            url=settings.secret("LIVEKIT_URL") or "",
            api_key=settings.secret("LIVEKIT_API_KEY") or "",
            api_secret=settings.secret("LIVEKIT_API_SECRET") or "",
            agent_name=agent_name,
        )
        yield (
            target,
            Meter(None, None, None, None),
            "the deployment at LIVEKIT_URL (client-side numbers only)",
        )
        return

    import tempfile
    from pathlib import Path

    from handler import config
    from handler.fakes.background import InBackground
    from handler.fakes.livekit_server import LiveKitServer, free_port, install
    from handler.fakes.worker_process import WorkerProcess, clean_env, settings_env
    from handler.sim import cloudsim

    phrases = {t.say: clips[i] for i, t in enumerate(turn_clip_indexes(scenario)) if t.say}
    phrases.update(said or {})
    fakes = InBackground(lambda: load_mode_servers(duration_recognizer(phrases)))
    with (
        tempfile.TemporaryDirectory(prefix="loadtest-") as tmp,
        fakes as overrides,
        LiveKitServer(install(), Path(tmp)) as lk,
    ):
        health = free_port()
        worker = WorkerProcess(
            clean_env(
                **{config.ENV_VAR: settings.env, config.ROOT_VAR: str(settings.root)},
                **lk.env(),
                **settings_env(overrides),
                **settings_env(
                    {
                        **cloudsim.cloud_overrides(settings),
                        "worker.port": health,
                        # the callers share the machine: livekit's CPU load would turn calls
                        # away before the worker itself is the limit
                        "worker.load_threshold": float("inf"),
                        "logging.level": "INFO",  # a handful of lines per call; shows registration
                        **(worker_overrides or {}),
                    }
                ),
                OPENAI_API_KEY="loadtest-dummy",
                ELEVEN_API_KEY="loadtest-dummy",
                SONIOX_API_KEY="loadtest-dummy",
                **(worker_env or {}),
            ),
            Path(tmp),
            cpus=worker_cpus,
        )
        try:
            await asyncio.to_thread(worker.wait_for_log, "registered worker", 30)
            progress(f"livekit-server {lk.url}, worker pid {worker.proc.pid}, provider servers in load mode")
            target = Target(lk.url, lk.api_key, lk.api_secret, agent_name)
            server_pid = lk.proc.pid if lk.proc else None
            meter = Meter(worker.proc.pid, server_pid, fakes.native_id, f"http://127.0.0.1:{health}/worker")
            executor = {**settings.section("worker"), **_worker_keys(worker_overrides)}["job_executor"]
            where = f"one local worker (env {settings.env}, {executor} executor, pid {worker.proc.pid})"
            yield target, meter, where
        finally:
            with contextlib.suppress(AssertionError):
                worker.terminate(30)
            worker.kill()
            if keep_log:  # the worker's log outlives the temporary directory
                import shutil

                shutil.copyfile(worker.err_path, keep_log)


def _worker_keys(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k.removeprefix("worker."): v for k, v in (overrides or {}).items() if k.startswith("worker.")}


def turn_clip_indexes(scenario: Scenario) -> list[Any]:
    """Scenario sounds in clip order (turns and their during-reply events), as `make_clips` orders them."""
    out: list[Any] = []
    for t in scenario.turns:
        out.append(t)
        out.extend(t.during_reply)
    return out
