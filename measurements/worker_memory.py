"""What an idle worker holds in memory: the base a pod's memory request is sized from
(deploy/k8s; a call adds about its job process's USS, which `loadtest` reports).

    python measurements/worker_memory.py [--env production] [--idle 2]

Starts a livekit-server on 127.0.0.1 and `python -m handler start` registered with it (planted
provider keys: no call is made), waits until the idle job processes have done their prewarm
(loaded the VAD), then prints every process of the worker's tree with its RSS, USS (memory of its
own) and PSS (shared pages divided among their sharers, so the PSS column sums to the physical
memory the tree uses; it is also what livekit's job memory warning and limit compare against).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402  (livekit-agents depends on it)

from handler import config  # noqa: E402
from handler.fakes.livekit_server import LiveKitServer, free_port, install  # noqa: E402
from handler.fakes.worker_process import WorkerProcess, clean_env, settings_env  # noqa: E402

KEYS = {
    name: f"planted-{name.lower()}-0123456789"
    for name in ("OPENAI_API_KEY", "ELEVEN_API_KEY", "SONIOX_API_KEY")
}
SETTLE = 2.0  # s every process must stay nearly idle (prewarm done) before the sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="production")
    ap.add_argument("--idle", type=int, default=2, help="worker.num_idle_processes")
    args = ap.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="worker-memory-") as tmp,
        LiveKitServer(install(), Path(tmp)) as lk,
    ):
        overrides = {
            "worker.port": free_port(),
            "worker.num_idle_processes": args.idle,
            "logging.level": "INFO",
        }
        env = clean_env(**{config.ENV_VAR: args.env, config.ROOT_VAR: tmp, **lk.env(), **KEYS})
        worker = WorkerProcess({**env, **settings_env(overrides)}, Path(tmp))
        t0 = time.monotonic()
        try:
            worker.wait_for_log("registered worker", 60)
            tree = _settled(psutil.Process(worker.proc.pid), args.idle, deadline=t0 + 120)
            print(
                f"env {args.env}, {args.idle} idle job process(es); "
                f"settled {time.monotonic() - t0:.1f} s after start"
            )
            print(f"{'pid':>7}  {'process':<44} {'RSS':>6} {'USS':>6} {'PSS':>6}  MB")
            total = [0.0, 0.0, 0.0]
            for proc in tree:
                m = proc.memory_full_info()
                row = [m.rss / 2**20, m.uss / 2**20, m.pss / 2**20]
                total = [a + b for a, b in zip(total, row, strict=True)]
                print(f"{proc.pid:>7}  {_name(proc):<44} {row[0]:6.0f} {row[1]:6.0f} {row[2]:6.0f}")
            print(f"{'':>7}  {'the worker tree':<44} {total[0]:6.0f} {total[1]:6.0f} {total[2]:6.0f}")
        finally:
            worker.terminate()


def _settled(root: psutil.Process, idle: int, deadline: float) -> list[psutil.Process]:
    """The tree once its idle job processes exist and nothing in it is busy (prewarm done)."""
    while time.monotonic() < deadline:
        tree = [root, *root.children(recursive=True)]
        jobs = [p for p in tree if "forkserver" in " ".join(p.cmdline()) and p.ppid() != root.pid]
        if len(jobs) >= idle:
            for p in tree:
                p.cpu_percent(None)
            time.sleep(SETTLE)
            if all(p.cpu_percent(None) < 10 for p in tree):
                return tree
        time.sleep(0.5)
    sys.exit("the worker's idle processes did not settle within 120 s")


def _name(proc: psutil.Process) -> str:
    cmd = " ".join(proc.cmdline())
    if "handler start" in cmd:
        return "worker (python -m handler start)"
    if "resource_tracker" in cmd:
        return "multiprocessing resource tracker"
    if "forkserver" in cmd:
        return (
            "forkserver"
            if proc.parent() and "handler start" in " ".join(proc.parent().cmdline())
            else "job process (idle, prewarmed)"
        )
    return cmd[:44]


if __name__ == "__main__":
    main()
