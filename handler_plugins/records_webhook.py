"""Records sink `webhook`: the end-of-call report POSTed as JSON, signed, retried, then spooled.

Each POST carries:
- `X-Voice-Handler-Timestamp`: unix seconds when it was signed;
- `X-Voice-Handler-Signature`: `sha256=` + hex HMAC-SHA256 of `"<timestamp>.<body>"` with the secret
  `RECORDS_WEBHOOK_SECRET` (a receiver recomputes it and rejects an old timestamp: no replays);
- `Idempotency-Key`: the record's id (the same on every attempt and every later delivery).

A 2xx is delivered. Connection errors, timeouts, 408, 429 and 5xx are retried at the configured
retry policy (`[retry]`: max_retries, backoff with jitter, Retry-After honoured); after the last
attempt, or on any other status, the record goes to the spool and is tried again later. Runs on the
writer's thread with the standard library's HTTP client (no second aiohttp session in the process).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from handler.api import (
    RETRYABLE_STATUS,
    Register,
    RetryPolicy,
    Runtime,
    SinkConfigError,
    hookimpl,
    parse_retry_after,
    table,
)
from handler.api import record_json as dumps

SECRET_VAR = "RECORDS_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-Voice-Handler-Signature"
TIMESTAMP_HEADER = "X-Voice-Handler-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"


OPTIONS = """\
# signed with HMAC-SHA256 over "<timestamp>.<body>" with the secret RECORDS_WEBHOOK_SECRET
# (environment, .env or .secrets.toml)
url = ""      # http(s) URL the end-of-call report is POSTed to
timeout = 5.0  # s one attempt may take; attempts follow [retry] (max_retries, backoff)
"""
"""`[records.webhook]`: this sink's options, their defaults and why. The lowest layer of the table:
every settings file changes them; `config show` lists them, labelled with this plugin."""


@hookimpl(trylast=True)
def register_providers(register: Register) -> None:
    register("records", "webhook", build, secrets=(SECRET_VAR,), validate=_problems, **table(OPTIONS))


def url_problem(url: Any) -> str | None:
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "must be an http:// or https:// URL with a host"
    return None


def _problems(options: Mapping[str, Any]) -> list[str]:
    out = []
    if bad := url_problem(options["url"]):
        out.append(f"url: {bad}")
    if options["timeout"] <= 0:
        out.append("timeout: must be more than 0")
    return out


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def build(options: Mapping[str, Any], runtime: Runtime) -> WebhookSink:
    secret = runtime.secret(SECRET_VAR)
    if not secret:
        raise SinkConfigError(f"records sink webhook needs {SECRET_VAR} (environment, .env or .secrets.toml)")
    r = runtime.settings.section("retry")
    policy = RetryPolicy(
        max_retries=r["max_retries"],
        backoff_initial=r["backoff_initial"],
        backoff_max=r["backoff_max"],
        jitter=r["jitter"],
        timeout=options["timeout"],
    )
    return WebhookSink(options["url"], secret, policy)


class DeliveryFailed(Exception):
    pass


class WebhookSink:
    name = "webhook"

    def __init__(self, url: str, secret: str, policy: RetryPolicy) -> None:
        self.url = url
        self._secret = secret
        self.policy = policy
        self.attempts = 0
        """POSTs made (every attempt), for tests and the benchmark."""

    def write(self, record: Mapping[str, Any]) -> None:
        body = dumps(record).encode()
        last = ""
        for attempt in range(1, self.policy.attempts + 1):
            retry_after = None
            stamp = str(int(time.time()))
            request = urllib.request.Request(
                self.url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    TIMESTAMP_HEADER: stamp,
                    SIGNATURE_HEADER: sign(self._secret, stamp, body),
                    IDEMPOTENCY_HEADER: str(record["id"]),
                    "User-Agent": "voice-handler-records",
                },
            )
            self.attempts += 1
            try:
                with urllib.request.urlopen(request, timeout=self.policy.timeout) as response:
                    response.read(1024)
                    return  # urlopen raises for anything but 2xx/3xx
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
                if e.code not in RETRYABLE_STATUS:
                    raise DeliveryFailed(f"webhook {self.url} refused the record: {last}") from None
                retry_after = parse_retry_after(e.headers.get("Retry-After"))
            except (urllib.error.URLError, OSError) as e:  # refused, reset, timed out
                last = str(getattr(e, "reason", e))
            if attempt < self.policy.attempts:
                time.sleep(self.policy.backoff(attempt, retry_after))
        raise DeliveryFailed(f"webhook {self.url}: {self.policy.attempts} attempts failed, the last: {last}")

    def close(self) -> None:
        return None
