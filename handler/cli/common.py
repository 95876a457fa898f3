"""What every command shares: the app, the options, and how a user's mistake ends (one message,
exit status 2; bugs keep their traceback)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from handler.config import ConfigError

START = "`start` to reach the LiveKit server"
CALL = "`call` to join a room"

app = typer.Typer(
    help="voice-handler: a LiveKit voice-agent worker whose every stage is a configured plugin.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EnvOption = Annotated[
    str | None,
    typer.Option(
        "--env", help="Environment (dev, fast, stable, production); default: $ENV_FOR_DYNACONF or dev."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ScenarioArgument = Annotated[
    str | None,
    typer.Argument(help="A bundled scenario (qa, noisy, barge_in) or a .toml file; default qa."),
]
OutOption = Annotated[
    str | None, typer.Option("--out", help="Write report.json, user.wav and agent.wav here.")
]

T = TypeVar("T")


class UserError(Exception):
    """A mistake the user can fix; its message is printed as is (exit status 2)."""


def fail(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)
    raise typer.Exit(2)


def user_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn the user's mistakes into one message and exit status 2, never a traceback."""
    import functools

    from handler.registry import PluginLoadError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            n = len(e.problems)
            fail(
                [f"voice-handler: {n} configuration problem{'s' if n > 1 else ''}:"]
                + [f"  - {line}" for line in e.lines()]
            )
        except (PluginLoadError, UserError) as e:
            fail([f"voice-handler: {e}"])
        raise AssertionError("unreachable")

    return wrapper


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
