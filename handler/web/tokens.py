"""Join tokens for the Talk page, minted here so the API secret never reaches the browser: each
carries the agent's dispatch (livekit-server starts the job when the token's join creates the
room) for a fresh room, as `python -m handler call`'s do (handler.room.target.Target)."""

from __future__ import annotations

import secrets

from handler.room.target import Target

__all__ = ["Target", "mint", "http_url"]


def http_url(target: Target) -> str:
    """The server's HTTP address (ws -> http), for a reachability probe."""
    return "http" + target.url[2:] if target.url.startswith("ws") else target.url


def mint(target: Target, env: str) -> dict[str, str]:
    """A browser's join: {url, token, room, identity, agent_name, env}; no secret in it."""
    room = f"web-{secrets.token_hex(5)}"
    identity = f"browser-{secrets.token_hex(3)}"
    return {
        "url": target.url,
        "token": target.token(identity, room),
        "room": room,
        "identity": identity,
        "agent_name": target.agent_name,
        "env": env,
    }
