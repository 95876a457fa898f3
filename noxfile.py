"""nox sessions: `tests` (the whole suite under dev; the tests whose behaviour depends on the
environment under each of dev, fast, stable and production), `lint`, `docs`, `typecheck`.

Sessions run with the interpreter nox itself runs under (README's set-up installs everything
there, and `.venv/bin/nox` works without activating the venv); `nox --force-venv-backend venv`
builds isolated virtualenvs instead and installs into them.
"""

from __future__ import annotations

import sys
import tempfile

import nox

ENVIRONMENTS = ["dev", "fast", "stable", "production"]

nox.options.sessions = ["tests", "lint", "docs"]
nox.options.default_venv_backend = "none"


def _install(session: nox.Session, *packages: str) -> None:
    if session.venv_backend != "none":
        session.install(*packages)


def _python(session: nox.Session) -> str:
    """The session's interpreter: its own virtualenv's, or the one running nox."""
    return "python" if session.venv_backend != "none" else sys.executable


def _livekit_server(session: nox.Session) -> None:
    """The real-room tests' livekit-server: found, or built from its Go module into .cache (once;
    later runs find it). Without Go that fails; the tests that need the server then skip, or fail
    under CI=true, each saying how to install it."""
    session.run(_python(session), "-m", "handler.fakes.livekit_server", "install", success_codes=[0, 1])


def _kubeconform(session: nox.Session) -> None:
    """The deployment tests' validator: kubeconform found or built from its Go module into .cache,
    and the Kubernetes schemas from the kubernetes-validate package; as for livekit-server, those
    tests skip (or fail under CI=true) when this could not be done."""
    session.run(_python(session), "tests/support/kubeconform.py", "install", success_codes=[0, 1])


def _web_assets(session: nox.Session) -> None:
    """The web app's LiveKit JS client, fetched with npm at its pinned version and integrity into
    .cache (once); without npm the browser tests skip, or fail under CI=true, saying how."""
    session.run(_python(session), "-m", "handler.web.assets", "install", success_codes=[0, 1])


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite under dev, in one pytest run; the tests marked `env_matrix` (they read the
    environment they run in: configuration, plugins, the command line) run once under each
    environment (`--env-matrix`). The rest pin their environment, so running them four times
    would test the same thing four times."""
    _install(session, "-e", ".[dev]")
    _livekit_server(session)
    _kubeconform(session)
    _web_assets(session)
    # Four pytest-xdist workers: most of the suite's time is conversations played at real-time
    # pace, which wait far more than they compute (each worker has its own livekit-server). With
    # another process keeping a core busy, the tests took 416 s on four workers, 452 s on three
    # (2026-11); with the records, browser, burst and outage tests, 865 tests took 859 s on four
    # (2026-12-07).
    # `worksteal`: the slow real-room tests come first (tests/conftest.py), and xdist's default
    # `load` hands each worker a contiguous first chunk, so one worker got all of them and ran
    # alone for minutes at the end; an idle worker now takes tests from a busy one's queue.
    session.run(
        _python(session),
        "-m",
        "pytest",
        "-n",
        "4",
        "--dist",
        "worksteal",
        "--env-matrix",
        ",".join(ENVIRONMENTS),
        *session.posargs,
        env={"ENV_FOR_DYNACONF": "dev"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    _install(session, "ruff")
    session.run(_python(session), "-m", "ruff", "check", ".")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, built as CI would publish it: `--strict`, so a broken link or
    anchor fails, and so does what docs/hooks/reference.py refuses (a settings key without its
    comment, an environment key settings.toml lacks, a hook without its docstring). Offline and
    into a temporary directory: nothing fetched, nothing left in the checkout."""
    _install(session, "-e", ".[dev]")
    with tempfile.TemporaryDirectory(prefix="voice-handler-site-") as site:
        session.run(
            _python(session),
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--quiet",
            "--site-dir",
            site,
            env={"NO_MKDOCS_2_WARNING": "1"},
        )


@nox.session
def typecheck(session: nox.Session) -> None:
    _install(session, "-e", ".[dev]")
    session.run(_python(session), "-m", "mypy", "handler", "handler_plugins")
