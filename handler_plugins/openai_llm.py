"""LLM `openai`: livekit's OpenAI plugin. The SDK's own retries stay off (max_retries=0): livekit's
connect options are the one retry layer. One SDK client per process and event loop, so its
keep-alive pool is reused across turns and sessions. (The SDK speaks through its own httpx
flavour, not aiohttp: that pool is the one HTTP_MAX_CONNECTIONS sizes for OpenAI.)"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping
from typing import Any

from handler.api import Register, Runtime, hookimpl, table

DEFAULT_URL = "https://api.openai.com/v1"

# per event loop (a client's pool belongs to the loop it was made on); a closed loop's entry goes
# with it, so a new loop that reuses its id never gets a dead client
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = weakref.WeakKeyDictionary()


OPTIONS = """\
model = "gpt-4o-mini"                  # OpenAI chat model
base_url = ""                          # API base URL; empty = OpenAI's own
"""
"""`[llm.openai]`: this provider's options, their defaults and why. The lowest layer of the table:
every settings file changes them; `config show` lists them, labelled with this plugin."""


@hookimpl(trylast=True)
def register_providers(register: Register):
    # No `endpoints`: a HEAD on the aiohttp pool would open a connection the SDK never uses. Its
    # own pool is warmed by livekit's LLM.prewarm() (GET /models), which AgentSession calls.
    register(
        "llm",
        "openai",
        build,
        secrets=("OPENAI_API_KEY",),
        preload=("openai", "livekit.plugins.openai"),
        **table(OPTIONS),
    )


def _client(base_url: str, api_key: str | None, settings: Any) -> Any:
    import openai
    from openai._constants import DEFAULT_CONNECTION_LIMITS

    # the Limits class of whichever httpx flavour this SDK release is built on
    limits_type = type(DEFAULT_CONNECTION_LIMITS)
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    if base_url not in per_loop:
        limit = settings.get("http.max_connections")
        per_loop[base_url] = openai.AsyncClient(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(
                timeout=openai.Timeout(settings.get("http.timeout")),
                limits=limits_type(
                    max_connections=limit,
                    max_keepalive_connections=limit,
                    keepalive_expiry=settings.get("http.keepalive_timeout"),
                ),
            ),
        )
    return per_loop[base_url]


def build(options: Mapping[str, Any], runtime: Runtime) -> Any:
    from livekit.plugins import openai

    return openai.LLM(
        model=options["model"],
        temperature=options["temperature"],
        max_completion_tokens=options["max_tokens"],
        client=_client(
            options["base_url"] or DEFAULT_URL, runtime.secret("OPENAI_API_KEY"), runtime.settings
        ),
    )
