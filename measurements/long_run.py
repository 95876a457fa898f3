"""A worker through hundreds of calls in a row: does anything grow, does anything slow down?

    python measurements/long_run.py [--calls 500] [--at-once 4] [--env production]
                                  [--executor process|thread] [--sample-every 30] [--block 50] [--json]

Sets up what `loadtest` sets up with no LIVEKIT_URL (a livekit-server on 127.0.0.1, one worker
with its Prometheus /metrics on, the provider servers in load mode) and runs `--calls` calls,
`--at-once` at a time, cycling through the conversation corpus (handler/sim/scenarios/corpus).
Every `--sample-every` seconds it samples the worker: its main process's RSS, open fds and threads,
the job processes alive, the Prometheus multiprocess directory's files and bytes (each job process
leaves its own files there), and how long one /metrics scrape takes. Per block of `--block` calls:
client-side TTFA p50 and failures.

The verdict compares each quantity after the first `--block` calls (the warm-up: imports, pools,
caches) with its value at the end of that block: its peak within 5% is flat. The main process's
fds and threads, and the metrics directory, move with the job processes alive at the instant (a
pipe and a supervising thread, a file or two each), so those are compared between samples that saw
the same number of job processes. A scrape's time is the fastest of three back to back: what the
scrape costs, without the moments it waited for a core. A full run of 500 calls takes about 45
minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402  (livekit-agents depends on it)

from handler import config  # noqa: E402
from handler.pipeline.turns import percentile  # noqa: E402
from handler.room import loadtest as lt  # noqa: E402
from handler.room.caller import Call, CallError  # noqa: E402

FLAT = 0.05
"""Within this fraction of its value after the warm-up block, a quantity has not grown."""
METRICS_DIR_PREFIX = "voice-handler-metrics-"
"""handler.pipeline.worker._metrics_dir's temporary directory, made under the worker's TMPDIR."""


@dataclass
class Sample:
    t: float
    calls_done: int
    rss_mb: float
    fds: int
    threads: int
    job_processes: int
    metrics_files: int
    metrics_kb: float
    scrape_ms: float | None


@dataclass
class Block:
    first_call: int
    calls: int = 0
    failed: int = 0
    ttfas: list[float] = field(default_factory=list)

    def p50(self) -> float | None:
        return percentile(self.ttfas, 50)


class Sampler:
    """Samples the worker every `every` seconds in a thread."""

    def __init__(self, worker: psutil.Process, tmpdir: Path, metrics_port: int, every: float) -> None:
        self.worker, self.tmpdir, self.metrics_port, self.every = worker, tmpdir, metrics_port, every
        self.samples: list[Sample] = []
        self.calls_done = 0
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.sample()

    def _run(self) -> None:
        self.sample()
        while not self._stop.wait(self.every):
            self.sample()

    def sample(self) -> None:
        w = self.worker
        try:
            with w.oneshot():
                rss, fds, threads = w.memory_info().rss / 2**20, w.num_fds(), w.num_threads()
            children = w.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        # livekit's job processes are the forkserver's children (the forkserver is the worker's)
        jobs = [p for p in children if _ppid(p) != w.pid]
        files = [f for d in self.tmpdir.glob(METRICS_DIR_PREFIX + "*") for f in d.iterdir() if f.is_file()]
        size = sum(_size(f) for f in files)
        sample = Sample(
            t=round(time.monotonic() - self.t0, 1),
            calls_done=self.calls_done,
            rss_mb=round(rss, 1),
            fds=fds,
            threads=threads,
            job_processes=len(jobs),
            metrics_files=len(files),
            metrics_kb=round(size / 1024, 1),
            scrape_ms=self._scrape(),
        )
        self.samples.append(sample)
        _progress(f"sample {json.dumps(asdict(sample))}")  # a run that fails at the end keeps its samples

    def _scrape(self) -> float | None:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
                    r.read()
            except OSError:
                return None
            times.append(time.perf_counter() - t)
        return round(min(times) * 1000, 1)


def _ppid(p: psutil.Process) -> int | None:
    try:
        return p.ppid()
    except psutil.NoSuchProcess:
        return None


def _size(f: Path) -> int:
    try:
        return f.stat().st_size
    except OSError:
        return 0


def _corpus() -> list[Any]:
    from handler.sim import scenario as scenarios

    out = []
    for name in scenarios.corpus_names():
        sc = scenarios.load(scenarios.CORPUS / f"{name}.toml")
        if not any(t.wav for t in sc.turns):  # load mode recognizes by the phrases' text
            out.append(sc)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from handler.fakes.livekit_server import free_port
    from handler.registry import Registry
    from handler.sim.clips import make_clips

    settings = config.load(args.env)
    registry = Registry.load()
    corpus = _corpus()
    clips = {sc.name: await make_clips(sc, registry, settings) for sc in corpus}
    said = {
        t.say: clips[sc.name][i]
        for sc in corpus
        for i, t in enumerate(lt.turn_clip_indexes(sc))
        if getattr(t, "say", None)
    }
    metrics_port = free_port()
    overrides = {"worker.prometheus_port": metrics_port}
    if args.executor:
        overrides["worker.job_executor"] = args.executor
    blocks = [Block(first_call=i) for i in range(0, args.calls, args.block)]
    with tempfile.TemporaryDirectory(prefix="long-run-") as tmp:
        async with lt.deployment(
            settings, corpus[0], clips[corpus[0].name], _progress, overrides,
            said=said, worker_env={"TMPDIR": tmp},
        ) as (target, meter, where):  # fmt: skip
            assert meter.worker is not None, "long_run needs a local worker: unset LIVEKIT_URL"
            sampler = Sampler(meter.worker, Path(tmp), metrics_port, args.sample_every)
            sampler.start()
            gate = asyncio.Semaphore(args.at_once)
            t0 = time.monotonic()

            async def one(i: int) -> None:
                sc = corpus[i % len(corpus)]
                block = blocks[i // args.block]
                async with gate:
                    c = Call(target, sc, clips[sc.name], lambda line: None, agent_timeout=60.0)
                    try:
                        await c.run()
                        ok = c.failure is None and not c.errors and all(t.ttfa is not None for t in c.turns)
                    except CallError:
                        ok = False
                    block.calls += 1
                    block.failed += not ok
                    block.ttfas.extend(float(t.ttfa) for t in c.turns if t.ttfa is not None)
                    sampler.calls_done += 1
                    if block.calls == args.block:
                        done = {"first_call": block.first_call + 1, "ttfa_p50": block.p50()}
                        _progress(f"block {json.dumps(done)}")
                    if sampler.calls_done % 10 == 0:
                        _progress(f"{sampler.calls_done}/{args.calls} calls ({time.monotonic() - t0:.0f} s)")

            await asyncio.gather(*(one(i) for i in range(args.calls)))
            sampler.stop()
    return verdict(sampler.samples, blocks, args, where)


PER_JOB_COUNT = ("fds", "threads", "metrics_files", "metrics_kb", "scrape_ms")
"""Quantities that follow the job processes alive at the instant: compared like with like."""


def growth(samples: list[dict[str, Any]], block: int) -> dict[str, Any]:
    """Each quantity's median per block of `block` calls after the first (the warm-up: imports,
    pools, caches), against the first such block's: the largest change either way. The quantities
    in PER_JOB_COUNT count only the samples that saw the number of job processes seen most under
    load: a sample that caught a process starting or ending is not a leak, a trend is."""
    warm = [s for s in samples if s["calls_done"] >= block]
    if not warm:
        return {}
    modal = Counter(s["job_processes"] for s in warm).most_common(1)[0][0]
    out: dict[str, Any] = {}
    for key in ("rss_mb", *PER_JOB_COUNT):
        by_block: dict[int, list[float]] = {}
        for s in warm:
            if s[key] is not None and (key not in PER_JOB_COUNT or s["job_processes"] == modal):
                by_block.setdefault(s["calls_done"] // block, []).append(s[key])
        medians = [round(statistics.median(v), 1) for _, v in sorted(by_block.items())]
        if len(medians) < 2 or not medians[0]:
            continue
        first = medians[0]
        worst = max(medians[1:], key=lambda m: abs(m - first))
        change = (worst - first) / first
        out[key] = {"medians": medians, "change": round(change, 3), "flat": bool(abs(change) <= FLAT),
                    "job_processes": modal if key in PER_JOB_COUNT else None}  # fmt: skip
    return out


def verdict(
    samples: list[Sample], blocks: list[Block], args: argparse.Namespace, where: str
) -> dict[str, Any]:
    growth_after = growth([asdict(s) for s in samples], args.block)
    p50s = [b.p50() for b in blocks if b.calls]
    first, final = (p50s[0], p50s[-1]) if p50s else (None, None)
    return {
        "target": where,
        "calls": args.calls,
        "at_once": args.at_once,
        "answered": sum(b.calls - b.failed for b in blocks),
        "failed": sum(b.failed for b in blocks),
        "samples": [asdict(s) for s in samples],
        "blocks": [
            {"calls": f"{b.first_call + 1}-{b.first_call + b.calls}", "failed": b.failed, "ttfa_p50": b.p50()}
            for b in blocks
            if b.calls
        ],
        "block": args.block,
        "growth_after_warmup": growth_after,
        "ttfa_p50_first_block": first,
        "ttfa_p50_last_block": final,
        "ttfa_flat": None if not first or final is None else bool(abs(final - first) / first <= FLAT),
    }


def render(doc: dict[str, Any]) -> str:
    lines = [
        f"long run against {doc['target']}: {doc['calls']} calls, {doc['at_once']} at a time; "
        f"answered {doc['answered']}, failed {doc['failed']}",
        f"{'t s':>7} {'calls':>5} {'RSS MB':>7} {'fds':>5} {'threads':>7} {'jobs':>4} "
        f"{'metrics files':>13} {'metrics KB':>10} {'scrape ms':>9}",
    ]
    for s in doc["samples"]:
        lines.append(
            f"{s['t']:>7.0f} {s['calls_done']:>5} {s['rss_mb']:>7.1f} {s['fds']:>5} {s['threads']:>7} "
            f"{s['job_processes']:>4} {s['metrics_files']:>13} {s['metrics_kb']:>10.1f} "
            f"{'-' if s['scrape_ms'] is None else s['scrape_ms']:>9}"
        )
    lines.append("TTFA p50 per block (client side):")
    for b in doc["blocks"]:
        p50 = "-" if b["ttfa_p50"] is None else f"{b['ttfa_p50'] * 1000:.0f} ms"
        lines.append(f"  calls {b['calls']:>9}: {p50}, {b['failed']} failed")
    lines.append(
        f"median per block of {doc['block']} calls after the first, against the first such block "
        f"(within {FLAT:.0%} = flat; fds, threads, metrics and scrape from the samples with the "
        "usual number of job processes alive):"
    )
    for key, g in doc["growth_after_warmup"].items():
        state = "flat" if g["flat"] else "GREW"
        jobs = "" if g["job_processes"] is None else f" ({g['job_processes']} jobs)"
        medians = " ".join(f"{m:g}" for m in g["medians"])
        lines.append(f"  {key:>13}{jobs}: {medians}; largest change {g['change']:+.1%}: {state}")
    if doc["ttfa_flat"] is not None:
        lines.append(
            f"  TTFA p50 first block {doc['ttfa_p50_first_block'] * 1000:.0f} ms, last "
            f"{doc['ttfa_p50_last_block'] * 1000:.0f} ms: {'flat' if doc['ttfa_flat'] else 'CHANGED'}"
        )
    return "\n".join(lines)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--at-once", type=int, default=4)
    p.add_argument("--env", default="production")
    p.add_argument("--executor", choices=["process", "thread"], default=None)
    p.add_argument("--sample-every", type=float, default=30.0)
    p.add_argument("--block", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.add_argument("--report", metavar="FILE", help="print the report of a run saved with --json")
    args = p.parse_args()
    if args.report:  # the verdict again, from the saved samples
        doc = json.loads(Path(args.report).read_text())
        doc["growth_after_warmup"] = growth(doc["samples"], doc.get("block", args.block))
        doc.setdefault("block", args.block)
        print(render(doc))
        return 0
    if args.calls < 1 or args.at_once < 1 or args.block < 1 or args.sample_every <= 0:
        p.error("--calls, --at-once, --block must be 1 or more and --sample-every above 0")
    doc = asyncio.run(run(args))
    print(json.dumps(doc, indent=2) if args.json else render(doc))
    return 0 if doc["failed"] == 0 else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
