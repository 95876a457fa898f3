"""Records leave the process off the audio path: a bounded queue and a thread per sink.

`submit` (called on the session's event loop when a call ends) only puts the record on each sink's
queue, never waits on a sink. Each sink has its own thread, so a slow webhook does not hold back
the database. A record a sink did not take (it failed, its queue was full, or the process is
ending before it got to it) goes to the durable spool (`handler.records.spool`) and is delivered
from there when the sink works again: at the sink's next success, every `records.retry_interval`
seconds, and when the next process starts. While a sink is failing, records go straight to the
spool instead of each waiting out its timeout.

One writer per process (`ensure`), built from the `records.sinks` providers. A job process (and a
command such as `simulate`) calls `flush` before it exits: it waits up to `records.flush_timeout`
for the queues, then spools what is left, including a record a sink is still busy with (a second
delivery is a no-op), so a SIGTERM's drain loses nothing; a SIGKILL loses at most the calls that
had not ended (their records did not exist yet).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from handler.records.sinks import Sink
from handler.records.spool import Spool, SpoolFileError

logger = logging.getLogger("handler.records")

_STOP = object()


class SinkWorker:
    """One sink's queue and thread."""

    def __init__(self, sink: Sink, spool: Spool, *, queue_size: int, retry_interval: float) -> None:
        self.sink = sink
        self.name = sink.name
        self.spool = spool
        self.retry_interval = retry_interval
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.delivered = 0
        self.spooled = 0
        self.failing_since: float | None = None
        """Monotonic time of the first failure in a row; None while the sink works."""
        self._last_attempt = 0.0
        self._inflight: Mapping[str, Any] | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self.thread = threading.Thread(target=self._run, name=f"records-{self.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    # -- the event loop's side: never blocks on the sink ----------------------------------------
    def submit(self, record: Mapping[str, Any]) -> None:
        with self._lock:
            self._busy += 1
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self._done()
            self._to_spool(record, "its queue is full")

    # -- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        self._deliver_spool()
        while True:
            try:
                item = self.queue.get(timeout=self.retry_interval)
            except queue.Empty:
                self._deliver_spool()
                continue
            if item is _STOP:
                return
            try:
                self._write(item)
            finally:
                self._done()

    def _done(self) -> None:
        with self._lock:
            self._busy -= 1
            self._idle.notify_all()

    def _write(self, record: Mapping[str, Any]) -> None:
        if self.failing_since is not None and time.monotonic() - self._last_attempt < self.retry_interval:
            self._to_spool(record, "it is failing")  # not one timeout per record while it is down
            return
        self._inflight = record
        try:
            if self._attempt(record):
                self.delivered += 1
                self._deliver_spool()  # it works (again): what waited for it goes now
            else:
                self._to_spool(record, "it failed")
        finally:
            self._inflight = None

    def _attempt(self, record: Mapping[str, Any]) -> bool:
        self._last_attempt = time.monotonic()
        try:
            self.sink.write(record)
        except Exception as e:
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                logger.warning("records sink %s failed, spooling until it works again: %s", self.name, e)
            return False
        if self.failing_since is not None:
            logger.warning(
                "records sink %s works again after %.0f s", self.name, time.monotonic() - self.failing_since
            )
            self.failing_since = None
        return True

    def _to_spool(self, record: Mapping[str, Any], why: str) -> None:
        try:
            self.spool.put(self.name, record)
        except OSError as e:  # the last place it could go: say so loudly
            logger.error(
                "records sink %s: record %s lost: %s, and the spool failed: %s",
                self.name,
                record.get("id"),
                why,
                e,
            )
            return
        self.spooled += 1
        logger.debug("records sink %s: record %s spooled (%s)", self.name, record.get("id"), why)

    def _deliver_spool(self) -> None:
        """Every spooled record of this sink, oldest first, until one fails."""
        for path, record in self.spool.items(self.name):
            if isinstance(record, SpoolFileError):
                logger.error("records sink %s: %s", self.name, record)
                continue
            if not self._attempt(record):
                return
            self.spool.done(path)
            self.delivered += 1

    # -- ending ---------------------------------------------------------------------------------
    def wait(self, deadline: float) -> bool:
        """Until the queue is empty and nothing is being written, or `deadline` (monotonic)."""
        with self._lock:
            while self._busy > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def spool_rest(self) -> int:
        """Spool what the thread has not delivered: the queue, and the record it is writing."""
        n = 0
        inflight = self._inflight
        if inflight is not None:
            self._to_spool(inflight, "the process is ending")
            n += 1
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return n
            if item is not _STOP:
                self._to_spool(item, "the process is ending")
                self._done()
                n += 1

    def stop(self) -> None:
        # a full queue: the thread is a daemon, it ends with the process
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(_STOP)


class RecordWriter:
    def __init__(
        self,
        sinks: list[Sink],
        directory: Path,
        *,
        queue_size: int,
        retry_interval: float,
        flush_timeout: float,
        registry: Any = None,
    ) -> None:
        self.registry = registry
        """The registry the sinks came from (a record names the providers chosen)."""
        self.spool = Spool(directory)
        self.flush_timeout = flush_timeout
        self.workers = [
            SinkWorker(s, self.spool, queue_size=queue_size, retry_interval=retry_interval) for s in sinks
        ]
        for w in self.workers:
            w.start()

    def submit(self, record: Mapping[str, Any]) -> None:
        for w in self.workers:
            w.submit(record)

    def flush(self, timeout: float | None = None) -> dict[str, int]:
        """Wait for every sink up to `timeout` (default `records.flush_timeout`); spool what is
        left. Returns per sink how many records were spooled now (0: all delivered)."""
        deadline = time.monotonic() + (self.flush_timeout if timeout is None else timeout)
        left = {}
        for w in self.workers:
            left[w.name] = 0 if w.wait(deadline) else w.spool_rest()
        return left

    def close(self, timeout: float | None = None) -> dict[str, int]:
        """Flush, stop the threads and close the sinks. Returns per sink how many records this
        writer spooled over its life (0: every one delivered)."""
        self.flush(timeout)
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.thread.join(timeout=1.0)
            if not w.thread.is_alive():
                try:
                    w.sink.close()
                except Exception as e:
                    logger.warning("records sink %s did not close cleanly: %s", w.name, e)
        return {w.name: w.spooled for w in self.workers}


# -- the process's writer ----------------------------------------------------------------------

_writer: RecordWriter | None = None
_writer_pid = 0
"""The process that built `_writer`: a forked child has its object but not its threads."""
_writer_lock = threading.Lock()


def directory(settings: Any) -> Path:
    """`records.directory`, relative to the project root."""
    path = Path(settings.get("records.directory"))
    return path if path.is_absolute() else Path(settings.root) / path


def build_sinks(settings: Any, registry: Any) -> list[Sink]:
    from handler.plan import resolve

    plan = resolve(settings, registry)
    runtime = plan.runtime_for("records")
    return [link.build(runtime) for link in plan.stage("records").chain]


def ensure(settings: Any, registry: Any) -> RecordWriter:
    """The process's writer, built on first use from `records.sinks`."""
    global _writer, _writer_pid
    with _writer_lock:
        if _writer is None or _writer_pid != os.getpid():
            _writer_pid = os.getpid()
            r = settings.section("records")
            _writer = RecordWriter(
                build_sinks(settings, registry),
                directory(settings),
                queue_size=r["queue_size"],
                retry_interval=r["retry_interval"],
                flush_timeout=r["flush_timeout"],
                registry=registry,
            )
        return _writer


def current() -> RecordWriter | None:
    return _writer


def flush(timeout: float | None = None) -> dict[str, int]:
    """Flush the process's writer, if it has one (blocking: call it from a thread or at exit)."""
    return _writer.flush(timeout) if _writer is not None else {}


def finish(progress: Any) -> None:
    """A command's end: flush and stop the writer; say which sink a record waits for, if any."""
    for sink, n in close().items():
        if n:
            progress(
                f"call records: {n} not delivered to the {sink} sink yet, kept in the spool for the next run"
            )


def close(timeout: float | None = None) -> dict[str, int]:
    """Flush and stop the process's writer; the next `ensure` builds a new one."""
    global _writer
    with _writer_lock:
        writer, _writer = _writer, None
    return writer.close(timeout) if writer is not None else {}
