"""Where a process's CPU goes: per thread (from /proc, native threads included) and, for its Python
threads, per function and per cost category (from py-spy's sampled stacks).

`measurements/job_profile.py` runs calls against a worker and uses both on every job process (and on
the callers' process); the pieces here are plain functions over /proc and py-spy's `raw` output
(one collapsed stack a line: `frame;frame;... count`, a frame `function (file:line)`), so the
attribution is tested without a worker.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    # (category, substrings of a frame's "function (file" text); the first rule a frame matches wins
    ("VAD inference (silero)", ("plugins/silero/",)),
    ("turn model (smart-turn)", ("smart_turn",)),
    ("resampling", ("audio_resampler", "resample")),
    ("logging", ("/logging/", "handler/logs/", "logging_default")),
    ("telemetry (opentelemetry)", ("opentelemetry",)),
    ("metrics (prometheus)", ("prometheus_client", "handler_plugins/metrics")),
    ("STT plugin (soniox)", ("plugins/soniox/",)),
    ("TTS plugin (elevenlabs)", ("plugins/elevenlabs/",)),
    ("LLM plugin (openai)", ("plugins/openai/", "/openai/", "httpx", "httpcore", "pydantic")),
    ("caller (handler.room.caller)", ("handler/room/caller", "handler/sim/io")),
    ("our code (handler)", ("/handler/", "handler_plugins/")),
    ("audio frames in/out (livekit rtc)", ("livekit/rtc/audio", "livekit/rtc/_proto", "protobuf")),
    ("livekit rtc (room, FFI events)", ("livekit/rtc/",)),
    ("livekit agents (audio framing, pipeline)", ("livekit/agents/",)),
    ("websocket/http (aiohttp)", ("aiohttp", "yarl", "multidict")),
]
GENERIC = (
    "numpy",
    "/asyncio/",
    "threading.py",
    "concurrent/",
    "selectors.py",
    "contextlib.py",
    "functools.py",
    "typing.py",
    "dataclasses.py",
    "copy.py",
    "weakref.py",
    "<frozen",
    "enum.py",
)
"""Frames that say nothing about whose cost it is: the sample goes to the nearest caller that does."""


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")

IDLE_LEAVES = {
    ("selectors.py", "select"),
    ("threading.py", "wait"),
    ("threading.py", "_wait_for_tstate_lock"),
    ("futures/thread.py", "_worker"),
    ("queue.py", "get"),
}
"""(file, function) leaves where a thread waits (in the C call under it). py-spy takes a thread
waiting in a blocking call for an active one on some kernels (this VM's among them), so these
samples are set apart: they are not CPU."""
IMPORT = "_find_and_load ("


def idle(stack: list[str]) -> bool:
    m = _FRAME.match(stack[-1])
    if not m:
        return False
    func = m["func"].rsplit(".", 1)[-1]
    return any(m["file"].endswith(f) and func == name for f, name in IDLE_LEAVES)


def category(stack: list[str]) -> str:
    """The cost category of one sampled stack (root first): module imports (a job process
    starting); else from the leaf up, the first frame that is not generic (numpy, asyncio, stdlib
    helpers) and matches a rule; a stack of generic frames only is the event loop's (waiting and
    dispatching) or numpy's."""
    if any(f.startswith(IMPORT) for f in stack):
        return "importing modules (job process start)"
    for frame in reversed(stack):
        if "/logging/" in frame:
            return "logging"
        if any(g in frame for g in GENERIC):
            continue
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
        return "other"
    if any("/asyncio/" in f or "selectors.py" in f for f in stack):
        return "asyncio event loop"
    return "numpy" if any("numpy" in f for f in stack) else "other"


def short(frame: str) -> str:
    """`function (file:line)` as `function (package/file.py)`: the line dropped, the path cut to
    its last two parts, so one function's samples add up."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    parts = m["file"].split("/")
    return f"{m['func']} ({'/'.join(parts[-2:])})"


@dataclass
class Profile:
    """Sampled stacks of one or more processes, added up."""

    rate: int
    samples: int = 0
    """Samples of a running thread (waiting ones, `IDLE_LEAVES`, are counted in `idle_samples`)."""
    idle_samples: int = 0
    by_category: Counter[str] = field(default_factory=Counter)
    self_time: Counter[str] = field(default_factory=Counter)
    """Samples whose leaf (first non-generic frame from the leaf, or the leaf) is this function."""
    inclusive: Counter[str] = field(default_factory=Counter)
    """Samples with this function anywhere on the stack."""

    def add_raw(self, lines: Iterable[str]) -> None:
        for line in lines:
            stack_text, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack_text or not count_text.isdigit():
                continue
            count = int(count_text)
            stack = [f for f in stack_text.split(";") if f and not f.startswith(("process ", "thread "))]
            if not stack:
                continue
            if idle(stack):
                self.idle_samples += count
                continue
            self.samples += count
            self.by_category[category(stack)] += count
            self.self_time[short(stack[-1])] += count
            for name in {short(f) for f in stack}:
                self.inclusive[name] += count

    def seconds(self, samples: int) -> float:
        return samples / self.rate


# ----------------------------------------------------------------------------- threads, from /proc


def thread_group(name: str) -> str:
    """A thread name without its number (`tokio-runtime-w`, `ThreadPoolExecutor-0_1` -> the pool)."""
    name = re.sub(r"[-_ ]?\d+$", "", name.strip())
    name = re.sub(r"[-_]\d+(_\d+)?$", "", name)
    return name or "?"


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) and name of every thread of `pid` now; {} once it has exited."""
    out: dict[int, tuple[str, float]] = {}
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
        for tid_text in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                stat = Path(f"/proc/{pid}/task/{tid_text}/stat").read_text()
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2 :].split()
                out[int(tid_text)] = (name, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return out


class ThreadMeter:
    """Keeps the last CPU seconds seen of every thread of the processes it samples (a thread or
    process that exits keeps its last value), to report CPU per thread group."""

    def __init__(self) -> None:
        self.last: dict[tuple[int, int], tuple[str, float]] = {}
        self.base: dict[tuple[int, int], float] = {}

    def sample(self, pid: int) -> None:
        for tid, (name, cpu) in thread_cpu(pid).items():
            self.last[(pid, tid)] = (name, cpu)

    def mark(self, pids: Iterable[int]) -> None:
        """From now on: CPU already spent by these processes' threads is not counted."""
        for pid in pids:
            self.sample(pid)
        self.base = {key: cpu for key, (_, cpu) in self.last.items()}

    def by_group(self, pids: Iterable[int] | None = None) -> dict[str, float]:
        """CPU seconds since `mark` per thread group, largest first."""
        keep = None if pids is None else set(pids)
        out: dict[str, float] = {}
        for (pid, tid), (name, cpu) in self.last.items():
            if keep is None or pid in keep:
                group = thread_group(name)
                out[group] = out.get(group, 0.0) + cpu - self.base.get((pid, tid), 0.0)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


# ----------------------------------------------------------------------------- py-spy


def py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class PySpy:
    """`py-spy record` on one process into a raw (collapsed stacks) file, until it exits or `stop`."""

    def __init__(self, exe: str, pid: int, out: Path, rate: int) -> None:
        self.pid, self.out = pid, out
        self.proc = subprocess.Popen(
            # nonblocking: the target is never paused, so the profile costs it nothing but the reads
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--nonblocking",
                "--full-filenames",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []
