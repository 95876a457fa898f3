"""nox sessions: `tests` once per environment (dev, fast, stable, production), `lint`, `typecheck`.

Sessions run in the environment nox itself runs in (README's set-up installs everything there);
`nox --force-venv-backend venv` builds isolated virtualenvs instead and installs into them.
"""

from __future__ import annotations

import nox

ENVIRONMENTS = ["dev", "fast", "stable", "production"]

nox.options.sessions = ["tests", "lint"]
nox.options.default_venv_backend = "none"


def _install(session: nox.Session, *packages: str) -> None:
    if session.venv_backend != "none":
        session.install(*packages)


@nox.session
@nox.parametrize("env", ENVIRONMENTS)
def tests(session: nox.Session, env: str) -> None:
    """The suite with ENV_FOR_DYNACONF=<env>. The real-time conversation tests pin their own
    environment, so they run once (under dev) instead of four times."""
    _install(session, "-e", ".[dev]")
    marks = [] if env == "dev" else ["-m", "not realtime"]
    session.run("pytest", *marks, *session.posargs, env={"ENV_FOR_DYNACONF": env})


@nox.session
def lint(session: nox.Session) -> None:
    _install(session, "ruff")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    _install(session, "-e", ".[dev]")
    session.run("mypy", "handler", "plugins")
