"""`web`: the browser console (handler/web)."""

from __future__ import annotations

from typing import Annotated

import typer

from handler.cli.common import (
    EnvOption,
    UserError,
    app,
    user_errors,
)


@app.command()
@user_errors
def web(
    env: EnvOption = None,
    local: Annotated[
        bool, typer.Option("--local", help="Also start livekit-server and a worker here (offline under dev).")
    ] = False,
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")] = 8090,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; beyond 127.0.0.1 needs --access-token.")
    ] = "127.0.0.1",
    access_token: Annotated[
        str | None,
        typer.Option("--access-token", help="Required beyond loopback (or VOICE_HANDLER_WEB_TOKEN)."),
    ] = None,
) -> None:
    """A web page to talk to the agent in a LiveKit room (LIVEKIT_* or --local), and the Calls pages."""
    from handler.web import serve

    try:
        serve.run(env, local=local, host=host, port=port, access_token=access_token)
    except serve.WebError as e:
        raise UserError(str(e)) from None


# ------------------------------------------------------------------------------ config
