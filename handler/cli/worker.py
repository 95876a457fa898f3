"""`start`, `health` and `dev`: the worker, as deployed and while developing."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from handler import config
from handler.cli.common import (
    START,
    EnvOption,
    app,
    user_errors,
)
from handler.config import ConfigError
from handler.plan import load


@app.command()
@user_errors
def start(env: EnvOption = None) -> None:
    """Run the worker for production: register with LiveKit and take jobs (SIGTERM drains)."""
    from handler.pipeline import worker

    warn_personal_data_in_logs(load(env, check=False, providers=False).settings, "start")
    worker.run(load(env, livekit_for=START), devmode=False)


def warn_personal_data_in_logs(settings: config.Settings, command: str) -> None:
    """A worker that takes real calls at DEBUG writes what callers say into its logs: the
    libraries' debug lines (the OpenAI SDK's request bodies, livekit's transcripts when content
    capture is on) carry it. `dev` is the environment when ENV_FOR_DYNACONF is unset, so say so
    loudly before the first call, not in the docs only."""
    if str(settings.get("logging.level")).upper() != "DEBUG":
        return
    unset = "" if os.environ.get(config.ENV_VAR) else f" ({config.ENV_VAR} is unset, so {config.DEFAULT_ENV})"
    why = f"environment {settings.env}{unset}, logging.level DEBUG from {settings.source('logging.level')}"
    capture = (
        ", and telemetry.capture_content adds transcripts"
        if settings.get("telemetry.capture_content")
        else ""
    )
    for line in (
        "!" * 78,
        f"WARNING: `{command}` under {why}:",
        "the log lines of real calls will carry personal data: what callers say (the LLM SDK's debug",
        f"lines hold each request body{capture}) and the room and participant names in livekit's",
        "own messages.",
        "For real calls run ENV_FOR_DYNACONF=production (or set LOG_LEVEL=INFO).",
        "!" * 78,
    ):
        print(line, file=sys.stderr)


@app.command()
@user_errors
def health(
    env: EnvOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 4.0,
) -> None:
    """Probe the local worker's health endpoint on worker.port: exit 0 if it answers OK, else 1
    (the container image's HEALTHCHECK; it reads the port from the same layers as `start`)."""
    import urllib.error
    import urllib.request

    settings = load(env, check=False, providers=False).settings
    port = settings.get("worker.port")
    if port == 0:
        raise ConfigError(
            [
                config.Problem(
                    "worker.port",
                    0,
                    settings.source("worker.port"),
                    "is 0 (any free port): the worker's health port is not known in advance, so "
                    "`health` cannot probe it; set a fixed port (the image uses 8081)",
                )
            ]
        )
    host = settings.get("worker.host") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # every interface: this machine's loopback is one of them
        host = "127.0.0.1"
    try:
        url_host = f"[{host}]" if ":" in host else host
        with urllib.request.urlopen(f"http://{url_host}:{port}/", timeout=timeout) as r:
            body = r.read(200).decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:  # HTTPError (503: not connected) is a URLError
        print(f"unhealthy: worker.port {port}: {e}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(f"healthy: worker.port {port}: {(body.strip().splitlines() or [''])[0]}")


@app.command()
@user_errors
def dev(
    env: EnvOption = None,
    reload: Annotated[
        bool, typer.Option(help="Restart the worker when a .py, .toml or .env file changes.")
    ] = True,
) -> None:
    """Run the worker in livekit's development mode: no load limit, reload on change."""
    from handler.pipeline import worker

    plan = load(env, livekit_for=START)
    if reload:
        from handler.pipeline.reload import run_with_reload

        raise typer.Exit(
            run_with_reload(
                plan.settings.root,
                [sys.executable, "-m", "handler", "dev", "--no-reload", *(["--env", env] if env else [])],
            )
        )
    worker.run(plan, devmode=True)
