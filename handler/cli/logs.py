"""`logs analyze`: the guide's grep recipes in one report."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from handler.cli.common import (
    JsonOption,
    UserError,
    app,
    user_errors,
)

logs_app = typer.Typer(help="Analyze voice-handler and livekit logs.", no_args_is_help=True)
app.add_typer(logs_app, name="logs")


@logs_app.command("analyze")
@user_errors
def logs_analyze(
    files: Annotated[list[str], typer.Argument(help="Log files; - reads standard input.")],
    as_json: JsonOption = False,
    plot: Annotated[str | None, typer.Option("--plot", help="Write a PNG timeline here.")] = None,
    slow_llm_ms: Annotated[float, typer.Option(help="LLM responses slower than this are slow.")] = 1000.0,
    false_per_minute_target: Annotated[
        float, typer.Option(help="Acceptable false interruptions per minute.")
    ] = 1.0,
) -> None:
    """The guide's grep recipes in one report: false interruptions, slow LLM, VAD warnings,
    errors and retries, log volume and time-to-first-audio percentiles, each with advice."""
    from handler import logs

    try:
        report = logs.analyze(files, slow_llm_ms=slow_llm_ms, false_per_minute_target=false_per_minute_target)
    except logs.LogInputError as e:
        raise UserError(str(e)) from None
    if plot:
        try:
            logs.plot(report, plot)
        except OSError as e:
            raise UserError(f"cannot write plot {plot}: {e.strerror}") from None
    print(json.dumps(report.to_dict(), indent=2) if as_json else logs.render_text(report))
