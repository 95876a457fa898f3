"""`python -m handler start` as a user starts it, in a subprocess, for tests and benchmarks.

Its stdout and stderr go to files (no pipe to fill up), so a test can read them while it runs and
show them when it fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from handler import config

EXIT_TIMEOUT = 20.0


def clean_env(**overrides: str | None) -> dict[str, str]:
    """This process's environment minus anything that configures voice-handler or livekit, with
    this checkout first on PYTHONPATH, plus `overrides` (None removes a variable)."""
    drop = set(config.SECRETS) | set(config.FLAT_KEYS) | {config.ENV_VAR}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("HANDLER_", "LIVEKIT_", "VOICE_HANDLER_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    # run this checkout's code whatever the cwd (a test's temp dir): in a git worktree the shared
    # venv's editable install points at another checkout
    source = str(Path(config.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def room_worker_env(
    root: Path, livekit: Mapping[str, str], env: str = "dev", **more: str | None
) -> dict[str, str]:
    """A worker's environment for a loopback livekit-server (`livekit`: its LIVEKIT_* variables):
    `env`'s settings from `root`, any free health port, job lines at INFO, plus `more`.

    The load threshold is off: livekit's load is the whole machine's CPU, which a busy test machine
    (or the browser and the build on a developer's) shares; a worker that marks itself full misses
    the dispatch, and livekit-server does not offer a room's job again."""
    return clean_env(
        **{
            config.ENV_VAR: env,
            config.ROOT_VAR: str(root),
            **livekit,
            "HANDLER_WORKER__PORT": "0",
            "HANDLER_WORKER__LOAD_THRESHOLD": "inf",
            "HANDLER_LOGGING__LEVEL": "INFO",
            **more,
        }
    )


def settings_env(overrides: Mapping[str, object]) -> dict[str, str]:
    """Dotted setting overrides (`stt.soniox.base_url`) as the HANDLER_* variables a worker reads."""
    return {f"{config.PREFIX}_" + key.upper().replace(".", "__"): _toml(v) for key, v in overrides.items()}


def _toml(value: object) -> str:
    """A value as the worker reads it back from its environment (TOML): `false`, not Python's
    `False`, which the worker would take for a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class WorkerProcess:
    """One `python -m handler start` (or any `python -m handler` command) in `cwd`."""

    def __init__(
        self,
        env: Mapping[str, str],
        cwd: Path,
        args: tuple[str, ...] = ("start",),
        name: str = "worker",
        *,
        own_group: bool = False,
        cpus: tuple[int, ...] | None = None,
    ) -> None:
        """`own_group`: in a session and process group of its own (as a supervisor starts it), so
        `signal_group` reaches the worker and every process it started, and nothing else. `cpus`:
        the worker and every process it starts run on these CPUs only (as `taskset` would)."""
        self.out_path, self.err_path = cwd / f"{name}.out", cwd / f"{name}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "handler", *args],
                env=dict(env),
                cwd=cwd,
                stdout=out,
                stderr=err,
                start_new_session=own_group,
                # before exec, so the forkserver and the job processes inherit it
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )
        self.own_group = own_group
        self.started = time.monotonic()

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float, *, count: int = 1) -> None:
        """Until `text` appears `count` times on stderr; fails if the process exits first."""
        deadline = time.monotonic() + timeout
        while self.stderr.count(text) < count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited {self.proc.returncode}" if self.proc.poll() is not None else "timed out"
                raise AssertionError(f"worker never logged {text!r} ({state}):\n{self.stderr[-3000:]}")
            time.sleep(0.1)

    def terminate(self, timeout: float = EXIT_TIMEOUT) -> tuple[int, float]:
        """SIGTERM, then (exit status, seconds until it exited)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout, "after SIGTERM"), time.monotonic() - t0

    def signal_group(self, sig: int = signal.SIGTERM) -> None:
        """`sig` to the worker's whole process group, as systemd's KillMode=control-group, `timeout`
        or Ctrl-C send it (needs `own_group`: the group is otherwise the test's own)."""
        assert self.own_group, "signal_group needs a worker started with own_group=True"
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float, what: str = "") -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker still running {timeout:.0f} s {what}:\n{self.stderr[-3000:]}"
            ) from None

    def kill(self) -> None:
        """SIGKILL to the worker and its job processes (they would otherwise outlive a test)."""
        if self.proc.poll() is None:
            children = _children(self.proc.pid)
            self.proc.kill()
            self.proc.wait(10)
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    import psutil  # livekit-agents depends on it

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
