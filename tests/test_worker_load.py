"""The load the worker reports is its own process tree's CPU, not the machine's
(handler/pipeline/worker_load.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from handler.pipeline.worker_load import WINDOW, TreeLoad

SPIN = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass"


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []

    def start(*argv: str) -> subprocess.Popen:
        p = subprocess.Popen(argv)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()
        p.wait()


def _settle(*loads: TreeLoad) -> list[float]:
    """Each load after a full window of samples, taken together, 0.5 s apart as livekit does."""
    values = [0.0] * len(loads)
    for _ in range(WINDOW):
        time.sleep(0.5)
        values = [load() for load in loads]
    return values


def test_a_busy_child_counts_and_a_busy_neighbour_does_not(procs):
    # an idle parent whose child spins; beside it, a spinning process outside its tree
    spawn_spinner = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {SPIN!r}])"
    parent = procs(sys.executable, "-c", spawn_spinner)
    neighbour = procs(sys.executable, "-c", SPIN)
    idle = procs("sleep", "30")  # starts in a millisecond: nothing of its start is sampled
    time.sleep(0.3)  # the parent has started its child

    busy, calm = _settle(TreeLoad(parent.pid, cpus=2), TreeLoad(idle.pid, cpus=2))

    # one core spinning out of two: 0.5, less while the machine is contended (bounded below by
    # a fifth of a core, far above what an idle tree shows)
    assert 0.1 < busy <= 0.55, busy
    assert calm < 0.05, calm  # the neighbour spins, but not in this tree
    assert neighbour.poll() is None


def test_the_load_is_a_fraction_of_the_allowance_and_starts_at_zero(procs):
    idle = procs("sleep", "30")  # starts in a millisecond: nothing of its start is sampled
    load = TreeLoad(idle.pid)  # the machine's own CPU count (cgroup-aware, as livekit's)
    assert load() < 0.05  # the CPU spent before it was created is not counted
    assert 0.0 <= _settle(load)[0] < 0.05


def test_the_worker_reports_its_tree_load():
    from handler import config
    from handler.pipeline.worker import make_server

    server = make_server(config.load("production"))
    assert isinstance(server.load_fnc, TreeLoad)


def test_a_pinned_worker_is_full_at_its_own_cores() -> None:
    import os

    from handler.pipeline.worker_load import cpu_allowance

    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert cpu_allowance() == 1
    finally:
        os.sched_setaffinity(0, before)
    assert cpu_allowance() <= len(before)
