"""livekit-agents' OpenTelemetry spans (agent_session, user_turn, eou_detection, llm_node, tts_node...)
exported over OTLP when `telemetry.endpoint` is set; nothing is imported or started otherwise.

- Exports are batched on a background thread with a bounded queue and a bounded export timeout:
  an unreachable collector costs the call nothing; spans that cannot be sent are dropped, and the
  first failure logs one WARNING (the exporter's own per-batch errors are silenced).
- Each user turn is a trace of its own, linked to the session's (handler/turn_traces.py).
- Every span carries the ids the session's log lines carry (`logcontext`: session, job, room),
  as `voice_handler.<id>` attributes: its parent's, else those bound where it starts.
- Message content (transcripts, replies, tool arguments) is withheld unless
  `telemetry.capture_content` is on: livekit's PII filter strips it before any exporter.
- Headers (auth) come from the secret named by `telemetry.headers_env`, in the OTLP
  `key=value,key2=value2` form; never logged.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from handler import logcontext

if TYPE_CHECKING:
    from handler.config import Settings

logger = logging.getLogger("handler.telemetry")

ID_PREFIX = "voice_handler."
PROTOCOLS = ("http", "grpc")
_lock = threading.Lock()
_installed: Any = None


def enabled(settings: Settings) -> bool:
    return bool(settings.get("telemetry.endpoint"))


def parse_headers(text: str) -> dict[str, str]:
    """`k=v,k2=v2` (OTEL_EXPORTER_OTLP_HEADERS' format; values may be %-encoded)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            out[key.strip().lower()] = unquote(value.strip())
    return out


def problems(settings: Settings) -> list[tuple[str, Any, str]]:
    """(key, value, message) for telemetry settings that cannot work; used by config validation."""
    out: list[tuple[str, Any, str]] = []
    endpoint = settings.get("telemetry.endpoint") or ""
    if not endpoint:
        return out
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        out.append(
            (
                "telemetry.endpoint",
                endpoint,
                "must be an http(s) URL, e.g. http://localhost:4318 (OTLP/HTTP) or http://localhost:4317 "
                '(with protocol = "grpc")',
            )
        )
    env = settings.get("telemetry.headers_env") or ""
    if env and not settings.secret(env):
        out.append(
            (
                env,
                None,
                f"named by telemetry.headers_env; set it in the environment, .env or .secrets.toml "
                f'(export {env}="Authorization=Bearer ...")',
            )
        )
    return out


def ids_of(span: Any) -> dict[str, Any]:
    """The `voice_handler.<id>` attributes a span carries ({} for a non-recording one)."""
    return {k: v for k, v in (getattr(span, "attributes", None) or {}).items() if k.startswith(ID_PREFIX)}


class _IdsProcessor:
    """Stamps the session's ids on every span: those it was started with, else its parent's, else
    the ids bound where it started. The parent's come first because a span may start in a context
    the ids were never bound in (the session's close, from the caller of `aclose`)."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        from opentelemetry import trace

        ids = {**ids_attributes(logcontext.current_ids()), **ids_of(trace.get_current_span(parent_context))}
        for key, value in ids.items():
            if key not in span.attributes:
                span.set_attribute(key, value)

    def on_end(self, span: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def _on_ending(self, span: Any) -> None:  # newer SDKs call this
        pass


def _exporter(settings: Settings) -> Any:
    endpoint = settings.get("telemetry.endpoint").rstrip("/")
    headers = parse_headers(settings.secret(settings.get("telemetry.headers_env") or "") or "")
    timeout = settings.get("telemetry.export_timeout")
    if settings.get("telemetry.protocol") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        parts = urlsplit(endpoint)
        return Grpc(
            endpoint=parts.netloc,
            insecure=parts.scheme == "http",
            headers=tuple(headers.items()),
            timeout=timeout,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    # the HTTP exporter takes the full traces URL; a bare collector address gets the standard path
    url = endpoint if urlsplit(endpoint).path.endswith("/v1/traces") else endpoint + "/v1/traces"
    return Http(endpoint=url, headers=headers, timeout=timeout)


class _WarnOnce:
    """Wraps the exporter: a failed export drops its batch; the first failure says so once."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.warned = False
        self.exported = 0
        self.dropped = 0

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            result = self.inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.dropped += len(spans)
            if not self.warned:
                self.warned = True
                logger.warning(
                    "telemetry: the OTLP collector did not accept spans; dropping them (calls are not "
                    "affected; this is said once)"
                )
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def install(settings: Settings) -> Any:
    """Set livekit's tracer provider once per process (idempotent); None when telemetry is off."""
    global _installed
    if not enabled(settings):
        return None
    with _lock:
        if _installed is not None:
            return _installed
        from livekit.agents.telemetry import set_tracer_provider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased

        from handler.turn_traces import SessionSampler, TurnTracerProvider

        # the exporter logs a stack per failed batch; _WarnOnce says it once instead
        for name in ("opentelemetry.exporter.otlp.proto.http", "opentelemetry.exporter.otlp.proto.grpc"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        provider = TurnTracerProvider(  # a trace per user turn (handler/turn_traces.py)
            resource=Resource.create({"service.name": settings.get("telemetry.service_name")}),
            sampler=ParentBased(SessionSampler(settings.get("telemetry.sample_ratio"))),
        )
        provider.add_span_processor(_IdsProcessor())  # type: ignore[arg-type]
        exporter = _WarnOnce(_exporter(settings))
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter,  # type: ignore[arg-type]
                max_queue_size=settings.get("telemetry.max_queue_size"),
                schedule_delay_millis=1000,
                export_timeout_millis=int(settings.get("telemetry.export_timeout") * 1000),
            )
        )
        set_tracer_provider(provider, allow_pii=bool(settings.get("telemetry.capture_content")))
        provider.exporter = exporter  # type: ignore[attr-defined]  # tests read its counters
        atexit.register(provider.shutdown)  # the last batch goes out (bounded by export_timeout)
        _installed = provider
        logger.info(
            "telemetry: exporting spans over OTLP/%s to %s",
            settings.get("telemetry.protocol"),
            urlsplit(settings.get("telemetry.endpoint")).netloc,
        )
        return provider


def flush(timeout: float = 5.0) -> None:
    if _installed is not None:
        _installed.force_flush(int(timeout * 1000))


def ids_attributes(ids: Mapping[str, str]) -> dict[str, str]:
    return {ID_PREFIX + k: str(v) for k, v in ids.items()}
