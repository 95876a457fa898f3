"""prometheus_client's multi-process directory, kept bounded while the worker runs.

Every process that records a sample (each job process: one per call, plus the idle ones) writes
its own files there, `<type>_<pid>.db` (gauges `gauge_<mode>_<pid>.db`), and /metrics reads them
all. Nothing removed a dead process's files: a worker that served 10,000 calls held 20,000 files
(1.3 GB, measured at 2 files and 128 KB a call) in an emptyDir, and every scrape read them all.

Here, a dead process's files are folded into the directory's history (`compact`):
- counters, histograms and summaries are added into one file per type (`counter_archive.db`,
  ...), so totals never go down and a counter never looks reset to Prometheus;
- gauges are dropped (what `mark_process_dead` does for the `live*` modes, for every mode: a dead
  process's current value is no one's current value);
then its files are deleted. `install` runs it every COMPACT_INTERVAL seconds in the worker, and
at each scrape before the directory is read, under one lock, so a scrape never sees a process's
counts twice (in its file and the archive) or not at all.

A pid the system has given to a new process or thread after the files' owner died does not keep
them (`_alive` compares the holder's start with the files' last write); a new job process that
reuses a dead one's pid before its files are folded continues them, as prometheus_client does on
its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger("handler.observe.metrics_files")

ARCHIVE = "archive"
"""The `<pid>` part of the files that hold dead processes' totals."""
SUMMED = ("counter", "histogram", "summary")
"""Types whose samples add up across processes (the collector sums them the same way)."""
COMPACT_INTERVAL = 15.0
"""Seconds between two folds when nobody scrapes (a scrape folds first anyway)."""

_lock = threading.RLock()


def _owner(path: Path) -> tuple[str, int | None]:
    """(type, pid) of a sample file; pid None for the archive or a name that is not ours."""
    parts = path.name.removesuffix(".db").split("_")
    pid = parts[2] if parts[0] == "gauge" and len(parts) > 2 else parts[1] if len(parts) > 1 else ""
    return parts[0], int(pid) if pid.isdigit() else None


def _alive(pid: int, last_written: float) -> bool:
    """Whether the process that last wrote its files at `last_written` (epoch s) still runs: a
    process with that pid, not a zombie, that had started by then. Linux reuses pids, and threads
    take their ids from the same numbers: with the default pid_max of 32768 a busy worker wraps
    them within hours (the 500-call run of docs/capacity.md did), and a dead job's files would stay
    for as long as the new holder of its number lives. psutil's start time errs early (the boot
    time is whole seconds), so a number taken again within a second still counts as alive: its
    files wait for the next fold."""
    import psutil

    try:
        holder = psutil.Process(pid)
        return holder.status() != psutil.STATUS_ZOMBIE and holder.create_time() <= last_written
    except psutil.NoSuchProcess:
        return False


def _last_written(files: list[Path]) -> float:
    times = []
    for f in files:
        with contextlib.suppress(OSError):
            times.append(f.stat().st_mtime)
    return max(times, default=0.0)


def compact(directory: str | os.PathLike[str], alive: Callable[[int, float], bool] = _alive) -> int:
    """Fold the files of every process that is no longer alive into the archive; returns how many
    processes were folded."""
    from prometheus_client.mmap_dict import MmapedDict

    root = Path(directory)
    with _lock:
        by_pid: dict[int, list[Path]] = defaultdict(list)
        for f in root.glob("*.db"):
            _, pid = _owner(f)
            if pid is not None and pid != os.getpid():
                by_pid[pid].append(f)
        dead = sorted(pid for pid, files in by_pid.items() if not alive(pid, _last_written(files)))
        if not dead:
            return 0
        for kind in SUMMED:
            folded = [f for pid in dead for f in by_pid[pid] if _owner(f)[0] == kind]
            if not folded:
                continue
            archive = root / f"{kind}_{ARCHIVE}.db"
            totals: dict[str, float] = defaultdict(float)
            for f in [archive, *folded] if archive.exists() else folded:
                for key, value, _, _ in MmapedDict.read_all_values_from_file(str(f)):
                    totals[key] += value
            # written aside and moved in place: the collector reads *.db only, a file whole or not
            staged = root / f"{kind}_{ARCHIVE}.staged"
            staged.unlink(missing_ok=True)
            out = MmapedDict(str(staged))
            try:
                for key, value in totals.items():
                    out.write_value(key, value, 0.0)
            finally:
                out.close()
            os.replace(staged, archive)
        for pid in dead:
            for f in by_pid[pid]:
                f.unlink(missing_ok=True)
        return len(dead)


def _compacting_collector() -> type:
    from prometheus_client import multiprocess

    base = multiprocess.MultiProcessCollector
    if getattr(base, "_compacts", False):
        return base

    class CompactingCollector(base):  # type: ignore[misc, valid-type]
        """The collector livekit's /metrics builds for each scrape, folding dead processes' files
        first, under the lock the periodic fold takes."""

        _compacts = True

        def collect(self) -> Iterator[Any]:
            with _lock:
                try:
                    compact(self._path)
                except Exception:  # a scrape must not fail for the bookkeeping
                    logger.exception("could not fold dead processes' metrics files")
                return iter(list(super().collect()))

    return CompactingCollector


@contextlib.contextmanager
def bounded(directory: str, interval: float = COMPACT_INTERVAL) -> Iterator[None]:
    """While the worker runs: scrapes fold dead processes' files first, and a thread folds them
    every `interval` seconds. livekit's /metrics handler builds
    `prometheus_client.multiprocess.MultiProcessCollector` per scrape, so that name is what is
    replaced (in this process only)."""
    from prometheus_client import multiprocess

    original = multiprocess.MultiProcessCollector
    setattr(multiprocess, "MultiProcessCollector", _compacting_collector())  # noqa: B010
    stop = threading.Event()

    def fold() -> None:
        while not stop.wait(interval):
            try:
                if os.path.isdir(directory):
                    compact(directory)
            except Exception:
                logger.exception("could not fold dead processes' metrics files")

    thread = threading.Thread(target=fold, name="metrics-files", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        setattr(multiprocess, "MultiProcessCollector", original)  # noqa: B010
