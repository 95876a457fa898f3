"""Go programs the tests need (livekit-server, kubeconform), found or built from their published Go
modules into a project-local cache. There is no internet here for release downloads, but the Go
module proxy answers, and both are pure Go (no cgo).

A tool is looked for, in order: `$<BIN_VAR>`, its name on PATH, `<cache root>/<name>/<version>/`;
`install` builds the pinned release into that cache only when none is found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class ToolNotFound(Exception):
    """No binary, and none can be built here; the message says how to get one."""


def cache_root() -> Path:
    """Where tools built for the tests go: `.cache/` in the checkout (beside pyproject.toml); for an
    installed package, the user's cache directory."""
    root = Path(__file__).resolve().parents[2]
    in_checkout = (root / "pyproject.toml").is_file()
    return root / ".cache" if in_checkout else Path.home() / ".cache" / "voice-handler"


@dataclass(frozen=True)
class GoTool:
    name: str
    """The binary's name, on PATH and in the cache."""
    module: str
    """The main package's import path; `go install` names the binary after its last element."""
    version: str
    bin_var: str
    install_command: str

    @property
    def cache_dir(self) -> Path:
        return cache_root() / self.name / self.version

    def find(self) -> Path | None:
        """The binary to use, or None."""
        if env := os.environ.get(self.bin_var):
            return Path(env)
        if on_path := shutil.which(self.name):
            return Path(on_path)
        cached = self.cache_dir / self.name
        return cached if cached.is_file() else None

    def install(self) -> Path:
        """The binary's path, building the pinned release into the cache if none is found."""
        found = self.find()
        if found is not None:
            if not found.is_file():
                raise ToolNotFound(f"{self.bin_var}={found}: no such file")
            return found
        go = shutil.which("go")
        if go is None:
            raise ToolNotFound(
                f"{self.name} not found ({self.bin_var}, PATH, {self.cache_dir}) and Go is not installed "
                f"to build it: install Go 1.26+ and run `{self.install_command}`, or set {self.bin_var}"
            )
        target = self.cache_dir
        target.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GOBIN": str(target), "CGO_ENABLED": "0"}
        pinned = f"{self.module}@{self.version}"
        done = subprocess.run([go, "install", pinned], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise ToolNotFound(f"`go install {pinned}` failed:\n{done.stderr.strip()[-2000:]}")
        built = target / self.module.rsplit("/", 1)[-1]
        if built.name != self.name:
            built.replace(target / self.name)
        return target / self.name
