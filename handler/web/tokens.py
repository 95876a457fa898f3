"""Join tokens for the Talk page, minted here so the API secret never reaches the browser: each
carries the agent's dispatch (livekit-server starts the job when the token's join creates the
room), a fresh room, and grants for that room only."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

TOKEN_TTL = timedelta(minutes=30)


@dataclass(frozen=True)
class Target:
    """The LiveKit deployment the Talk page calls into, and the agent it asks for."""

    url: str
    api_key: str
    api_secret: str
    agent_name: str

    @property
    def http_url(self) -> str:
        """The server's HTTP address (ws -> http), for a reachability probe."""
        return "http" + self.url[2:] if self.url.startswith("ws") else self.url


def mint(target: Target, env: str) -> dict[str, str]:
    """A browser's join: {url, token, room, identity, agent_name}; no secret in it."""
    from livekit import api

    room = f"web-{secrets.token_hex(5)}"
    identity = f"browser-{secrets.token_hex(3)}"
    token = (
        api.AccessToken(target.api_key, target.api_secret)
        .with_identity(identity)
        .with_name("Talk page")
        .with_ttl(TOKEN_TTL)
        .with_grants(
            api.VideoGrants(
                room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True
            )
        )
        .with_room_config(
            api.RoomConfiguration(
                agents=[api.RoomAgentDispatch(agent_name=target.agent_name, metadata='{"source": "web"}')]
            )
        )
        .to_jwt()
    )
    return {
        "url": target.url,
        "token": token,
        "room": room,
        "identity": identity,
        "agent_name": target.agent_name,
        "env": env,
    }
