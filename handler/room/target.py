"""Where a caller calls: a LiveKit deployment, its credentials and the agent to dispatch, and the join
tokens that dispatch it. Light to import (livekit's token API only): `web` mints tokens with it
without loading the caller's audio and simulation machinery."""

from __future__ import annotations

from dataclasses import dataclass

from livekit import api


class CallError(Exception):
    """The call could not go on; `exit_code` 2 for the user's mistakes, 1 for a failed service."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Target:
    url: str
    api_key: str
    api_secret: str
    agent_name: str
    room: str = ""

    def token(self, identity: str, room: str) -> str:
        """A join token whose room configuration dispatches the agent when the join creates the room."""
        return (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(identity)
            .with_name("voice-handler caller")
            .with_grants(api.VideoGrants(room_join=True, room=room))
            .with_room_config(
                api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=self.agent_name)])
            )
            .to_jwt()
        )


def check_url(url: str) -> None:
    if not url.startswith(("ws://", "wss://", "http://", "https://")):
        # the URL is a secret here (a project's URL names it): say what is wrong, not what it is
        raise CallError("LIVEKIT_URL must start with ws://, wss://, http:// or https://", 2)
