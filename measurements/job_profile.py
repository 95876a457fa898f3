"""Where a call's CPU goes: the worker's job processes (and the callers) under load, per thread and
per cost category.

    python measurements/job_profile.py [SCENARIO] [--calls 4] [--env production] [--frame-ms 10]
                                     [--executor process|thread] [--rate 100] [--top 15]
                                     [--no-py-spy] [--json]

Sets up what `loadtest` sets up with no LIVEKIT_URL (a livekit-server on 127.0.0.1, one worker,
the provider servers in load mode), runs `--calls` calls at once, and meanwhile:

- reads every thread's CPU time of every job process (and of this process, the callers) from
  /proc, so native threads (livekit's Rust runtime: WebRTC, Opus, the FFI; onnxruntime's) count;
- runs `py-spy record` (pip install py-spy; the dev extra has it) on every job process, whose
  sampled Python stacks are added up per cost category (VAD inference, resampling, logging, the
  provider plugins, livekit's pipeline, our own code...) and per function.

Prints CPU per call in cores (CPU seconds over call seconds) by thread group, the categories and
the top functions. `--frame-ms` overrides `room.input_frame_ms` (the frame size the job hears the
caller in), to weigh its cost against the latency it saves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402  (livekit-agents depends on it)

from handler import config  # noqa: E402
from handler.room import cpu_profile as cp  # noqa: E402
from handler.room import loadtest as lt  # noqa: E402

POLL = 0.25


def job_processes(worker: psutil.Process) -> list[psutil.Process]:
    """livekit's job processes: children of its forkserver (the worker's own child)."""
    try:
        tree = worker.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in tree if p.ppid() != worker.pid]


class Watcher:
    """Polls the worker's tree: starts py-spy on each new job process (with the thread executor: on
    the worker itself, where the calls run), samples thread CPU."""

    def __init__(
        self, worker: psutil.Process, out: Path, rate: int, spy: str | None, threads: bool = False
    ) -> None:
        self.worker, self.out, self.rate, self.spy, self.threads = worker, out, rate, spy, threads
        self.meter = cp.ThreadMeter()
        self.jobs: set[int] = set()
        self.spies: dict[int, cp.PySpy] = {}
        self.caller_spy: cp.PySpy | None = None
        self.me = psutil.Process().pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        if self.spy:  # the callers' process: what a caller costs, apart
            self.caller_spy = cp.PySpy(self.spy, self.me, self.out / "callers.txt", self.rate)
        self._poll()
        self.meter.mark([self.me, *self.jobs])
        # what a job process spent before it took a call: starting (imports) and livekit's prewarm
        self.prewarm_cpu = [sum(cpu for _, cpu in cp.thread_cpu(pid).values()) for pid in self.jobs]
        self._thread.start()

    def _poll(self) -> None:
        for p in [self.worker] if self.threads else job_processes(self.worker):
            if p.pid not in self.jobs:
                self.jobs.add(p.pid)
                if self.spy:
                    self.spies[p.pid] = cp.PySpy(self.spy, p.pid, self.out / f"{p.pid}.txt", self.rate)
        for pid in [self.me, *self.jobs]:
            self.meter.sample(pid)

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            self._poll()

    def stop(self) -> cp.Profile:
        self._stop.set()
        self._thread.join(5)
        self._poll()
        profile = cp.Profile(self.rate)
        for spy in self.spies.values():
            spy.stop()
            profile.add_raw(spy.lines())
        self.callers = cp.Profile(self.rate)
        if self.caller_spy is not None:
            self.caller_spy.stop()
            self.callers.add_raw(self.caller_spy.lines())
        return profile


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from handler.cli.conversation import conversation_input
    from handler.registry import Registry
    from handler.sim.clips import make_clips

    settings = config.load(args.env)
    registry = Registry.load()
    scenario, _ = conversation_input(args.scenario, None, registry, "job_profile")
    clips = await make_clips(scenario, registry, settings)
    overrides: dict[str, Any] = {"worker.job_executor": args.executor}
    if args.frame_ms:
        overrides["room.input_frame_ms"] = args.frame_ms
    spy = None if args.no_py_spy else cp.py_spy()
    if not args.no_py_spy and spy is None:
        raise SystemExit("job_profile: py-spy not found (pip install py-spy, or --no-py-spy)")
    with tempfile.TemporaryDirectory(prefix="job-profile-") as tmp:
        async with lt.deployment(settings, scenario, clips, _progress, overrides, args.worker_log) as (
            target,
            meter,
            where,
        ):
            assert meter.worker is not None, "job_profile needs a local worker: unset LIVEKIT_URL"
            await asyncio.sleep(3)  # the idle job processes finish their prewarm
            watcher = Watcher(meter.worker, Path(tmp), args.rate, spy, args.executor == "thread")
            watcher.start()
            level = lt.Level(concurrency=args.calls, calls=args.calls)
            t0 = time.monotonic()
            with meter.level(level):
                await lt.run_level(level, target, scenario, clips, 0.0, _progress)
            wall = time.monotonic() - t0
            profile = watcher.stop()
    jobs = watcher.meter.by_group(watcher.jobs)
    callers = watcher.meter.by_group([watcher.me])
    call_s = level.call_seconds or 1.0
    # py-spy's sample counts give shares; /proc gives the Python threads' CPU they share out (on
    # this VM py-spy counts some waiting for running, so its own seconds overstate)
    python_cores = jobs.get("python", 0.0) / call_s
    share = lambda n: n / max(1, profile.samples)  # noqa: E731
    caller_python = callers.get("python", 0.0) / call_s
    cshare = lambda n: n / max(1, watcher.callers.samples)  # noqa: E731
    return {
        "callers_py_spy": {
            "samples": watcher.callers.samples,
            "python_threads_cores_per_call": round(caller_python, 4),
            "cores_per_call_by_category": {
                k: round(cshare(v) * caller_python, 4) for k, v in watcher.callers.by_category.most_common()
            },
            "top_self": [
                [k, round(cshare(v) * caller_python, 4)]
                for k, v in watcher.callers.self_time.most_common(args.top)
            ],
        },
        "target": where,
        "scenario": scenario.name,
        "env": settings.env,
        "input_frame_ms": args.frame_ms or settings.get("room.input_frame_ms"),
        "executor": args.executor,
        "calls": args.calls,
        "completed": level.completed,
        "failed": level.failed,
        "failures": level.failures,
        "ttfa_p50": level.ttfa_p50,
        "ttfa_p95": level.ttfa_p95,
        "call_seconds": round(call_s, 1),
        "wall_seconds": round(wall, 1),
        "worker_tree_cores_per_call": level.cpu_per_call
        if level.cpu_per_call is not None
        else round((level.worker_cpu_s or 0.0) / call_s, 3),
        "job_threads_cores_per_call": {k: round(v / call_s, 4) for k, v in jobs.items()},
        "callers_threads_cores_per_call": {k: round(v / call_s, 4) for k, v in callers.items()},
        "job_processes": len(watcher.jobs),
        "idle_job_process_cpu_s": [round(v, 2) for v in watcher.prewarm_cpu],
        "py_spy": {
            "rate": profile.rate,
            "samples": profile.samples,
            "idle_samples": profile.idle_samples,
            "python_threads_cores_per_call": round(python_cores, 4),
            "cores_per_call_by_category": {
                k: round(share(v) * python_cores, 4) for k, v in profile.by_category.most_common()
            },
            "top_self": [
                [k, round(share(v) * python_cores, 4)] for k, v in profile.self_time.most_common(args.top)
            ],
            "top_inclusive": [
                [k, round(share(v) * python_cores, 4)] for k, v in profile.inclusive.most_common(args.top)
            ],
        },
        "other_cpu_s": level.other_cpu_s,
    }


def render(r: dict[str, Any]) -> str:
    ms = lambda v: "-" if v is None else f"{v * 1000:.0f}"  # noqa: E731
    lines = [
        f"{r['calls']} call(s) at once, scenario {r['scenario']}, env {r['env']}, room.input_frame_ms "
        f"{r['input_frame_ms']}, {r['executor']} executor: {r['completed']} ok, {r['failed']} failed, "
        f"ttfa p50 {ms(r['ttfa_p50'])} "
        f"p95 {ms(r['ttfa_p95'])} ms; {r['call_seconds']} call-seconds in {r['wall_seconds']} s",
        *[f"  failed: {f}" for f in r["failures"][:3]],
        f"worker tree (loadtest's measure): {r['worker_tree_cores_per_call']:.3f} cores per call",
        "",
        (
            "the worker's process (the calls are its threads)"
            if r["executor"] == "thread"
            else f"job processes ({r['job_processes']})"
        )
        + f", CPU by thread, cores per call (total {sum(r['job_threads_cores_per_call'].values()):.3f}):",
    ]
    lines += _rows(r["job_threads_cores_per_call"], 8)
    if r["executor"] == "process":
        lines.append(
            "  an idle job process had spent "
            + ", ".join(f"{v:.2f}" for v in r["idle_job_process_cpu_s"])
            + " CPU s before its call (start, imports, prewarm): every call takes a new process"
        )
    lines.append(
        f"callers (this process: {r['calls']} rtc.Rooms, the scenario publishers, the load-mode providers' "
        f"thread), cores per call (total {sum(r['callers_threads_cores_per_call'].values()):.3f}):"
    )
    lines += _rows(r["callers_threads_cores_per_call"], 6)
    spy = r["py_spy"]
    if spy["samples"]:
        lines += [
            "",
            f"job processes' Python threads (py-spy, {spy['samples']} samples at {spy['rate']} Hz; "
            f"{spy['idle_samples']} of threads waiting set apart): their "
            f"{spy['python_threads_cores_per_call']:.3f} cores per call (/proc) shared out by cost category:",
            *_rows(spy["cores_per_call_by_category"], 20),
            "",
            "top functions, self (the first frame from the leaf that is not numpy/asyncio/stdlib):",
            *[f"  {v:8.4f}  {k}" for k, v in spy["top_self"]],
            "",
            "top functions, inclusive (anywhere on the stack):",
            *[f"  {v:8.4f}  {k}" for k, v in spy["top_inclusive"]],
        ]
    cspy = r["callers_py_spy"]
    if cspy["samples"]:
        lines += [
            "",
            f"callers' Python threads (py-spy, {cspy['samples']} samples): their "
            f"{cspy['python_threads_cores_per_call']:.3f} cores per call shared out by cost category:",
            *_rows(cspy["cores_per_call_by_category"], 12),
            "top functions, self:",
            *[f"  {v:8.4f}  {k}" for k, v in cspy["top_self"]],
        ]
    return "\n".join(lines)


def _rows(values: dict[str, float], limit: int) -> list[str]:
    items = list(values.items())
    rows = [f"  {v:8.4f}  {k}" for k, v in items[:limit]]
    if len(items) > limit:
        rows.append(f"  {sum(v for _, v in items[limit:]):8.4f}  ({len(items) - limit} more)")
    return rows


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default=None, help="bundled scenario or .toml (default qa)")
    ap.add_argument("--calls", type=int, default=4, help="calls at once")
    ap.add_argument("--env", default="production")
    ap.add_argument("--frame-ms", type=int, default=0, help="override room.input_frame_ms (10, 20, ...)")
    ap.add_argument("--executor", choices=("process", "thread"), default="process", help="job executor")
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--no-py-spy", action="store_true", help="thread CPU only")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker-log", metavar="FILE", help="keep the worker's log (stderr) in FILE")
    args = ap.parse_args()
    if args.calls < 1:
        raise SystemExit("job_profile: --calls must be at least 1")
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2) if args.json else render(result))


if __name__ == "__main__":
    main()
