"""One `python -m handler simulate SCENARIO --env ENV --offline --json -v` run, as the benchmarks
use it: the same offline STT, LLM and TTS under each environment's own settings, log lines on
stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any


def simulate_offline(
    scenario: str, env: str, variables: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], str]:
    """The JSON report and everything written to stderr (logs and progress); exits on failure.
    `variables` are set in the run's environment (`HANDLER_TURN__DETECTION=smart-turn`, say)."""
    out = subprocess.run(
        [sys.executable, "-m", "handler", "simulate", scenario, "--env", env, "--offline", "--json", "-v"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(variables or {})},
    )
    if out.returncode != 0:
        sys.exit(f"simulate failed for {env}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout), out.stderr
