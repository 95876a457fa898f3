"""Side-effect module: a stop signal to the worker's whole process group is the worker's to handle.

systemd's default `KillMode=control-group`, `timeout`, `kill -TERM -- -PGID`, group-forwarding
inits and Ctrl-C (SIGINT to the terminal's foreground group) signal every process of the worker:
its main process, livekit's forkserver and each job process. Only the main process should act on
it (it drains: running calls finish within `drain_timeout`, then it closes the job processes
through livekit's IPC). livekit's job processes mean to ignore SIGINT and SIGTERM, but do so in
`livekit.agents.ipc.job_proc_lazy_main` at import time, guarded by the process's name; under the
forkserver that module is imported once in the forkserver (our preloads import livekit.agents), so
the guard never runs in a job process. And the forkserver itself dies of SIGTERM, which closes
every job process's sentinel: livekit reads that as "exited with non-zero exit code 255" and drops
the calls, the idle processes too.

The worker lists this module first among livekit's forkserver preloads (handler.pipeline.worker.JOB_MODULES):
importing it there makes the forkserver ignore SIGINT and SIGTERM, and the forkserver's children
(job and inference processes) inherit SIG_IGN (the forkserver restores only the handlers it set
itself, and it records them after the preloads ran). In the worker's main process, or any process
that is not one of its forks, importing it does nothing: the worker names its own pid in
MAIN_PID_VAR before its forkserver starts.
"""

from __future__ import annotations

import os
import signal

MAIN_PID_VAR = "VOICE_HANDLER_WORKER_PID"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def leave_stop_signals_to_the_worker() -> bool:
    """Ignore SIGINT and SIGTERM here if this is a process the worker started; True if it did."""
    main = os.environ.get(MAIN_PID_VAR)
    if not main or main == str(os.getpid()):
        return False
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    return True


leave_stop_signals_to_the_worker()
