"""Retry policy `default`: MAX_RETRIES retries after the first attempt, exponential backoff with
jitter, Retry-After honoured, each attempt bounded by HTTP_TIMEOUT."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handler.api import Register, RetryPolicy, Runtime, hookimpl


@hookimpl(trylast=True)
def register_providers(register: Register):
    register("retry", "default", build)


def build(options: Mapping[str, Any], runtime: Runtime) -> RetryPolicy:
    return RetryPolicy(
        max_retries=options["max_retries"],
        backoff_initial=options["backoff_initial"],
        backoff_max=options["backoff_max"],
        jitter=options["jitter"],
        timeout=runtime.settings.get("http.timeout"),
    )
