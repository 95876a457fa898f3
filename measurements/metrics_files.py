"""The Prometheus multiprocess directory over many calls: files, disk and scrape time, with the
worker's folding of dead job processes' files (handler/observe/metrics_files.py) and without.

    python measurements/metrics_files.py [--calls 200] [--at-once 4] [--turns 5]

Each call is a real process that records its turns through the `metrics` plugin (the histograms
and counters a job process writes) and a livekit-style `livesum` gauge, then exits, as a job
process does when its call ends; `--at-once` run together. After every batch the directory is
measured and scraped (prometheus_client's collector: what livekit's /metrics runs), then, in the
folded run, folded as the worker's thread does. Prints one line per tenth of the calls.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from handler.observe import metrics_files  # noqa: E402

CALL = """
import sys
from prometheus_client import Gauge
import handler_plugins.metrics as metrics
from handler.pipeline.turns import TurnRecord

Gauge("bench_running_jobs", "calls running", multiprocess_mode="livesum").inc()
for n in range(1, int(sys.argv[1]) + 1):
    metrics.turn_completed(TurnRecord(n=n, ttfa=0.9, llm_ttft=0.35, tts_ttfb=0.2), {})
"""


def disk(directory: Path) -> tuple[int, int]:
    """(files, bytes allocated on disk): the mmap files are sparse, so blocks, not sizes."""
    files = list(directory.glob("*.db"))
    return len(files), sum(f.stat().st_blocks * 512 for f in files)


def scrape(directory: Path) -> tuple[float, float]:
    """(seconds one /metrics read takes, turns counted)."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    t0 = time.perf_counter()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    text = generate_latest(registry).decode()
    took = time.perf_counter() - t0
    (line,) = [x for x in text.splitlines() if x.startswith("voice_handler_turns_total ")]
    return took, float(line.split()[1])


def run(calls: int, at_once: int, turns: int, fold: bool) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="vh-metrics-bench-") as tmp:
        directory = Path(tmp)
        env["PROMETHEUS_MULTIPROC_DIR"] = tmp
        print(
            f"{'folded' if fold else 'not folded (before)'}: {calls} calls, {at_once} at once, {turns} turns"
        )
        print(f"  {'calls':>6} {'files':>6} {'disk KB':>8} {'scrape ms':>9} {'fold ms':>8} {'turns':>7}")
        done = 0
        while done < calls:
            batch = min(at_once, calls - done)
            procs = [
                subprocess.Popen([sys.executable, "-c", CALL, str(turns)], env=env) for _ in range(batch)
            ]
            for p in procs:
                if p.wait(120) != 0:
                    raise SystemExit("a call process failed")
            done += batch
            fold_ms = 0.0
            if fold:
                t0 = time.perf_counter()
                metrics_files.compact(directory)
                fold_ms = (time.perf_counter() - t0) * 1000
            if done % max(1, calls // 10) < batch or done == calls:
                files, size = disk(directory)
                took, counted = scrape(directory)
                assert counted == done * turns, (counted, done * turns)
                row = f"  {done:>6} {files:>6} {size / 1024:>8.0f} {took * 1000:>9.1f}"
                print(f"{row} {fold_ms:>8.1f} {counted:>7.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--at-once", type=int, default=4)
    ap.add_argument("--turns", type=int, default=5)
    args = ap.parse_args()
    for fold in (False, True):
        run(args.calls, args.at_once, args.turns, fold)


if __name__ == "__main__":
    main()
