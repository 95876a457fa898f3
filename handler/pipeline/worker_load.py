"""The load a worker reports to LiveKit: the CPU its own process tree uses, over the CPUs it may use.

livekit's default load is the CPU use of the whole machine (or of the cgroup, where one is set).
In a pod with a CPU limit the two are the same thing, since the worker's tree is all that runs
there. On a machine shared with other work they are not: a busy neighbour drives livekit's load to
1.0, the worker then reports itself full, and livekit-server also skips any worker whose load is
1.0 when it picks one (its weight is `1 - load`), so calls the worker could carry are turned away
and a refused dispatch is not offered again. Counting the worker's own tree (the main process, the
forkserver, every job process) measures what the worker's calls cost, wherever it runs.

The allowance is livekit's own CPU count (cgroup-aware: a pod's CPU limit, else the machine's
cores), or the CPUs the worker is pinned to if fewer; the average is over the last 2.5 s, as livekit's is.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque

import psutil

WINDOW = 5
"""Samples averaged: livekit reads the load every 0.5 s, so 2.5 s, as its default load does."""


def process_tree(root: psutil.Process) -> list[psutil.Process]:
    """`root` and every process under it (the worker: main process, forkserver, job processes);
    empty once `root` has gone."""
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_allowance() -> float:
    """The CPUs the worker may use: livekit's count (a cgroup's CPU limit, else the machine's
    cores), or fewer when the worker is pinned to some (`taskset`, a cpuset, `loadtest
    --worker-cores`): a worker on one core of two is full at one core's work, not two."""
    from livekit.agents.utils.hw import get_cpu_monitor

    count = get_cpu_monitor().cpu_count()
    if hasattr(os, "sched_getaffinity"):
        count = min(count, len(os.sched_getaffinity(0)))
    return count


class TreeLoad:
    """A callable for `AgentServer(load_fnc=...)`: each call is one sample, the CPU time the tree
    spent since the previous call over the wall time times the allowance, averaged over WINDOW."""

    def __init__(self, pid: int | None = None, cpus: float | None = None) -> None:
        self._root = psutil.Process(pid or os.getpid())
        self._cpus = cpus or cpu_allowance()
        self._seen: dict[tuple[int, float], float] = {}
        """CPU seconds per process (pid, create time: a reused pid is a new process) at the last sample."""
        self._last = time.monotonic()
        self._samples: deque[float] = deque(maxlen=WINDOW)
        self._lock = threading.Lock()  # livekit calls it from an executor thread
        self._sample_cpu()

    def _sample_cpu(self) -> float:
        """CPU seconds the tree spent since the last sample. A process seen for the first time
        counts from its start (a job process started between samples is not missed); one that ended
        since loses at most its last interval."""
        spent = 0.0
        now: dict[tuple[int, float], float] = {}
        for proc in process_tree(self._root):
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    times = proc.cpu_times()
            except psutil.Error:  # ended while we looked
                continue
            total = times.user + times.system
            now[key] = total
            spent += total - self._seen.get(key, 0.0)
        self._seen = now
        return spent

    def __call__(self) -> float:
        with self._lock:
            t = time.monotonic()
            spent = self._sample_cpu()
            wall, self._last = t - self._last, t
            if wall > 0:
                self._samples.append(min(max(spent / (wall * self._cpus), 0.0), 1.0))
            return sum(self._samples) / len(self._samples) if self._samples else 0.0
