"""What a provider factory receives besides its options: the process's shared resources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

    from handler.config import Settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    """The whole validated configuration (read-only)."""
    http_session: aiohttp.ClientSession | None
    """The process's one pooled aiohttp session; hand it to plugins instead of making new ones."""
    conn_options: Any
    """`livekit.agents.APIConnectOptions` from the retry policy (max retries, timeout)."""

    def secret(self, name: str) -> str | None:
        """A secret's value (environment, .env or .secrets.toml); never log it."""
        return self.settings.secret(name)
