"""A real livekit-server on loopback, for tests and benchmarks: install it, find it, run it.

The server is the open-source LiveKit SFU, built from its published Go module (pure Go, no cgo) at
a pinned release whose go.mod has no `replace` lines (`go install pkg@version` refuses those):

    python -m handler.fakes.livekit_server install      # prints the binary's path

It is looked for, in order: `$LIVEKIT_SERVER_BIN`, `livekit-server` on PATH, the project-local
cache (`.cache/livekit-server/<version>/` beside the checkout). `install` builds into that cache
only when none is found (needs Go; a cold build takes about two minutes on 2 cores).

`LiveKitServer` runs one for a test session: free ports, its own API key and secret, a config
that keeps everything on 127.0.0.1 (node IP, ICE over one loopback UDP port, no ICE over TCP, no
public STUN servers handed to clients), its log in a file that a failing test shows.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

from handler.fakes.go_tools import GoTool, ToolNotFound

VERSION = "v1.13.5"
MODULE = "github.com/livekit/livekit-server/cmd/server"
BIN_VAR = "LIVEKIT_SERVER_BIN"
INSTALL_COMMAND = "python -m handler.fakes.livekit_server install"
START_TIMEOUT = 20.0
TARGET_LOAD = 2.0
"""livekit-server's own gate on the load a worker reports (0..1, averaged over 2.5 s): it offers a
room's job only when the sum over available workers of `target_load - load` is above 0 (psrpc's
claim affinity; at 0 the request fails with "no servers available (received 1 responses)"), and it
tries once per room. Its default, 0.7, turned calls away whenever the machine was busy, while the
worker still reported the machine's CPU (one core busy plus a caller starting: 0.95); above 1 this
gate never closes. A second gate stays: a worker is picked with weight `1 - load`, so one that
reports 1.0 is skipped ("no workers with sufficient capacity"); our worker reports its own process
tree's CPU (handler/pipeline/worker_load.py), which the tests' other load does not raise."""


SERVER = GoTool("livekit-server", MODULE, VERSION, BIN_VAR, INSTALL_COMMAND)
ServerNotFound = ToolNotFound


def find() -> Path | None:
    """The binary to use, or None."""
    return SERVER.find()


def install(log: Any = sys.stderr) -> Path:
    """The binary's path, building the pinned release into the cache if none is found."""
    if SERVER.find() is None:
        where = SERVER.cache_dir
        print(f"building livekit-server {VERSION} into {where} (go install: minutes, cold)", file=log)
    return SERVER.install()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveKitServer:
    """One livekit-server process on 127.0.0.1 with fresh ports and credentials.

    with LiveKitServer(install()) as lk:
        lk.url, lk.api_key, lk.api_secret
    """

    def __init__(
        self,
        binary: Path,
        workdir: Path | None = None,
        *,
        port: int = 0,
        api_key: str = "",
        api_secret: str = "",
    ) -> None:
        self.binary = binary
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="livekit-server-")
        self.workdir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.port = port or free_port()
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.api_key = api_key or "test-" + secrets.token_hex(4)
        self.api_secret = api_secret or secrets.token_urlsafe(32)
        self.log_path = self.workdir / "livekit-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The LIVEKIT_* variables a worker or caller needs to reach this server."""
        return {
            "LIVEKIT_URL": self.url,
            "LIVEKIT_API_KEY": self.api_key,
            "LIVEKIT_API_SECRET": self.api_secret,
        }

    def config(self) -> str:
        # agents.target_load: see TARGET_LOAD.
        # STUN: with none configured the server hands clients Google's public STUN servers; a closed
        # loopback port keeps clients from reaching out (host candidates on 127.0.0.1 connect anyway)
        return f"""\
port: {self.port}
bind_addresses: [127.0.0.1]
keys:
  {self.api_key}: {self.api_secret}
log_level: info
rtc:
  udp_port: {self.udp_port}
  tcp_port: 0
  node_ip: 127.0.0.1
  use_external_ip: false
  enable_loopback_candidate: true
  interfaces:
    includes: [lo]
  ips:
    includes: [127.0.0.1/32]
  stun_servers: ["127.0.0.1:{free_port(socket.SOCK_DGRAM)}"]
room:
  empty_timeout: 10
  departure_timeout: 5
agents:
  target_load: {TARGET_LOAD}
"""

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        path = self.workdir / "livekit.yaml"
        path.write_text(self.config())
        path.chmod(0o600)  # it holds the secret
        with self.log_path.open("ab") as log:  # a restart's log follows the one before
            self.proc = subprocess.Popen(
                [str(self.binary), "--config", str(path)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"livekit-server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"livekit-server not answering after {timeout:.0f} s:\n{self.log()}")
            time.sleep(0.1)

    def log(self, since: int = 0) -> str:
        """The server's log from byte offset `since` (the secret never appears in it)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def end_process(self) -> None:
        """Stops the server process (SIGTERM, then SIGKILL after 10 s); its ports, keys and
        directory stay, so `start` brings the same server back (its rooms are gone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def restart(self, down: float = 0.0) -> Self:
        """Stopped, `down` seconds without a server, then started on the same port with the same
        keys: what a deploy or a crash-and-restart of livekit-server looks like to its clients."""
        self.end_process()
        time.sleep(down)
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections but answers nothing (a stalled host)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()  # a paused server cannot act on SIGTERM
        self.end_process()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


USAGE = f"""usage:
  {INSTALL_COMMAND}        find or build the binary; prints its path
  python -m handler.fakes.livekit_server path           the binary's path, if installed
  python -m handler.fakes.livekit_server run [PORT]     a loopback-only server (default port 7880)
      with the credentials in LIVEKIT_API_KEY and LIVEKIT_API_SECRET, until Ctrl+C"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command, rest = (args[0], args[1:]) if args else ("", [])
    if command == "path" and not rest:
        found = find()
        print(found or f"not installed; run `{INSTALL_COMMAND}`")
        return 0 if found else 1
    if command == "install" and not rest:
        try:
            print(install())
        except ServerNotFound as e:
            print(f"livekit-server: {e}", file=sys.stderr)
            return 1
        return 0
    if command == "run" and len(rest) <= 1 and all(r.isdigit() for r in rest):
        return _run(int(rest[0]) if rest else 7880)
    print(USAGE, file=sys.stderr)
    return 2


def _run(port: int) -> int:
    key, secret = os.environ.get("LIVEKIT_API_KEY", ""), os.environ.get("LIVEKIT_API_SECRET", "")
    if not key or len(secret) < 32:
        print(
            "livekit-server: set LIVEKIT_API_KEY, and LIVEKIT_API_SECRET to 32 characters or more "
            "(e.g. export LIVEKIT_API_SECRET=$(openssl rand -hex 24)); the worker and `call` use the same",
            file=sys.stderr,
        )
        return 2
    binary = find()
    if binary is None:
        print(f"livekit-server: not installed; run `{INSTALL_COMMAND}`", file=sys.stderr)
        return 1

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a supervisor's stop takes the server with it
    server = LiveKitServer(binary, port=port, api_key=key, api_secret=secret).start()
    print(f"livekit-server on {server.url} (127.0.0.1 only); log: {server.log_path}; Ctrl+C stops it")
    try:
        assert server.proc is not None
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
