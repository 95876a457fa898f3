"""`dev --reload`: run the worker in a child process and restart it when a source file changes.

livekit-agents 1.8 removed in-process reload from its Python CLI (it points to `lk agent dev`);
a polling watcher is enough here and needs nothing installed.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path

WATCHED = ("*.py", "*.toml", ".env")


def _snapshot(root: Path) -> dict[Path, float]:
    out = {}
    for pattern in WATCHED:
        for p in root.rglob(pattern):
            if ".venv" not in p.parts and ".nox" not in p.parts:
                with contextlib.suppress(OSError):  # deleted between listing and stat
                    out[p] = p.stat().st_mtime
    return out


def run_with_reload(root: Path, command: list[str], *, interval: float = 1.0) -> int:
    """Returns the child's exit status once it exits by itself or on Ctrl+C / SIGTERM."""
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        child = subprocess.Popen(command)
        seen = _snapshot(root)
        changed: list[str] = []
        while child.poll() is None and not stopping and not changed:
            time.sleep(interval)
            now = _snapshot(root)
            changed = sorted(
                str(p.relative_to(root)) for p in set(now) | set(seen) if now.get(p) != seen.get(p)
            )
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        if stopping or not changed:  # asked to stop, or the worker exited by itself
            return child.wait()
        print(f"voice-handler: {', '.join(changed[:3])} changed; restarting the worker", flush=True)
