"""`python -m handler ...`: the commands, one module per group, each thin over the packages below it.

    worker.py        start, health, dev
    conversation.py  simulate, call
    capacity.py      loadtest, bench
    web.py           web
    settings.py      config show|check, plugins list
    logs.py          logs analyze
    (calls: handler/records/commands.py)

User mistakes (configuration, input files, missing keys) end in one clear message and exit status
2; bugs keep their traceback (common.py). Heavy imports (livekit, onnxruntime, pocketsphinx) happen
only in the commands that need them.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import sys
import threading

from handler.cli.common import app
from handler.records import commands as records_commands

for _group in ("worker", "conversation", "capacity", "web", "settings", "logs"):
    importlib.import_module(f"handler.cli.{_group}")  # registers its commands, listed in this order
app.add_typer(records_commands.app, name="calls")

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except SystemExit as done:
        _exit_before_finalization(done.code)
    _exit_before_finalization(0)


def _exit_before_finalization(code: int | str | None) -> None:
    """Exit as Python would, minus the interpreter's finalization.

    livekit's native runtime (the rtc FFI: resamplers, rooms) keeps tokio threads that call back
    into Python, to forward its logs about once a second. A callback that lands while the
    interpreter finalizes is ended by CPython with pthread_exit, which unwinds through Rust frames
    that cannot unwind, and the process aborts ("panic in a function that cannot unwind", exit
    134) after the command succeeded. So do what finalization would do for us (join non-daemon
    threads, run atexit: the FFI's dispose, the last telemetry batch; flush output) and leave with
    os._exit before any thread can be killed that way.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_Finalize calls first
    atexit._run_exitfuncs()  # logging's own shutdown is one of them
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`| head`): nothing more to say
            stream.flush()
    os._exit(status)
