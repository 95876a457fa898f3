"""LLM `openai`: livekit's OpenAI plugin. The SDK's own retries stay off (max_retries=0): livekit's
connect options are the one retry layer. One SDK client per process and event loop, so its
keep-alive pool is reused across turns and sessions. (The SDK speaks through its own httpx
flavour, not aiohttp: that pool is the one HTTP_MAX_CONNECTIONS sizes for OpenAI.)"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from handler.hookspecs import hookimpl

DEFAULT_URL = "https://api.openai.com/v1"

_clients: dict[tuple[int, str], Any] = {}


@hookimpl(trylast=True)
def register_providers(register):
    register(
        "llm",
        "openai",
        build,
        secrets=("OPENAI_API_KEY",),
        endpoints=lambda o: [o["base_url"] or DEFAULT_URL],
    )


def _client(base_url: str, api_key: str | None, settings: Any) -> Any:
    import openai
    from openai._constants import DEFAULT_CONNECTION_LIMITS

    # the Limits class of whichever httpx flavour this SDK release is built on
    limits_type = type(DEFAULT_CONNECTION_LIMITS)
    key = (id(asyncio.get_running_loop()), base_url)
    if key not in _clients:
        limit = settings.get("http.max_connections")
        _clients[key] = openai.AsyncClient(
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
    return _clients[key]


def build(options: Mapping[str, Any], runtime: Any) -> Any:
    from livekit.plugins import openai

    return openai.LLM(
        model=options["model"],
        temperature=options["temperature"],
        max_completion_tokens=options["max_tokens"],
        client=_client(
            options["base_url"] or DEFAULT_URL, runtime.secret("OPENAI_API_KEY"), runtime.settings
        ),
    )
