"""livekit-agents' OpenTelemetry spans (agent_session, user_turn, eou_detection, llm_node, tts_node...)
and metrics (`lk.agents.turn.*` latency histograms, `lk.agents.usage.*` counters) exported over OTLP
when `telemetry.endpoint` is set; nothing is imported or started otherwise.

- Exports run on background threads (spans batched with a bounded queue, metrics every 15 s) with
  a bounded export timeout: an unreachable collector costs the call nothing; what cannot be sent
  is dropped, and the first failure logs one WARNING (the exporters' own errors are silenced).
- Each user turn is a trace of its own, linked to the session's (handler/observe/turn_traces.py).
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

from handler.observe import logcontext
from handler.observe.span_ids import ID_PREFIX, ids_of

if TYPE_CHECKING:
    from handler.config import Settings

logger = logging.getLogger("handler.observe.telemetry")

PROTOCOLS = ("http", "grpc")
_lock = threading.Lock()
_installed: Any = None
_meters: Any = None


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


class _IdsProcessor:
    """Stamps the session's ids on every span: those it was started with, else its parent's, else
    the ids bound where it started, else its job's. The parent's come first because a span may
    start in a context the ids were never bound in (the session's close, from `aclose`'s caller)."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        from livekit.agents import get_job_context
        from opentelemetry import trace

        # livekit's own job spans (room disconnect, session upload) start outside the entrypoint's
        # context, where the ids were bound: the job they run for names them
        job = get_job_context(required=False)
        ids = {
            **(ids_attributes(logcontext.job_ids(job.job)) if job is not None else {}),
            **ids_attributes(logcontext.current_ids()),
            **ids_of(trace.get_current_span(parent_context)),
        }
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


_EXPORTERS = {  # (protocol, signal) -> the OTLP exporter class, imported only when used
    ("grpc", "traces"): "opentelemetry.exporter.otlp.proto.grpc.trace_exporter:OTLPSpanExporter",
    ("grpc", "metrics"): "opentelemetry.exporter.otlp.proto.grpc.metric_exporter:OTLPMetricExporter",
    ("http", "traces"): "opentelemetry.exporter.otlp.proto.http.trace_exporter:OTLPSpanExporter",
    ("http", "metrics"): "opentelemetry.exporter.otlp.proto.http.metric_exporter:OTLPMetricExporter",
}
METRICS_INTERVAL_MS = 15_000
"""How often livekit's histograms and counters are sent (and once more at process exit)."""


def _exporter(settings: Settings, signal: str) -> Any:
    """The OTLP exporter of `signal` ("traces" or "metrics") for the configured endpoint."""
    import importlib

    endpoint = settings.get("telemetry.endpoint").rstrip("/")
    headers = parse_headers(settings.secret(settings.get("telemetry.headers_env") or "") or "")
    timeout = settings.get("telemetry.export_timeout")
    protocol = settings.get("telemetry.protocol")
    module, _, name = _EXPORTERS[protocol, signal].partition(":")
    cls = getattr(importlib.import_module(module), name)
    if protocol == "grpc":
        parts = urlsplit(endpoint)
        return cls(
            endpoint=parts.netloc,
            insecure=parts.scheme == "http",
            headers=tuple(headers.items()),
            timeout=timeout,
        )
    # the HTTP exporters take the full URL of their signal; a bare collector address (or one given
    # with the traces path, as earlier versions asked for) gets the standard path of each
    base = endpoint.removesuffix("/v1/traces")
    return cls(endpoint=f"{base}/v1/{signal}", headers=headers, timeout=timeout)


class _Drops:
    """Counts what the collector took and what was dropped; the first drop of any signal logs the
    one WARNING (the exporters' own per-batch errors are silenced)."""

    def __init__(self) -> None:
        self.warned = False
        self.exported = 0
        self.dropped = 0

    def export(self, call: Any, size: int, failure: Any) -> Any:
        try:
            result = call()
        except Exception:
            result = failure
        if result.name == "SUCCESS":
            self.exported += size
        else:
            self.dropped += size
            if not self.warned:
                self.warned = True
                logger.warning(
                    "telemetry: the OTLP collector did not accept spans or metrics; dropping them (calls "
                    "are not affected; this is said once)"
                )
        return result


class _WarnOnce:
    """Wraps the span exporter: a failed export drops its batch (see `_Drops`)."""

    def __init__(self, inner: Any, drops: _Drops) -> None:
        self.inner = inner
        self.drops = drops

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return self.drops.export(lambda: self.inner.export(spans), len(spans), SpanExportResult.FAILURE)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _metric_reader(settings: Settings, drops: _Drops) -> Any:
    """A periodic reader whose exporter drops a failed batch (see `_Drops`); the metrics SDK wants
    a `MetricExporter` subclass that states its temporality, so the wrapper is one."""
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )

    inner = _exporter(settings, "metrics")

    class Dropping(MetricExporter):
        def __init__(self) -> None:
            super().__init__(inner._preferred_temporality, inner._preferred_aggregation)

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            size = sum(len(sm.metrics) for rm in metrics_data.resource_metrics for sm in rm.scope_metrics)
            return drops.export(
                lambda: inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs),
                size,
                MetricExportResult.FAILURE,
            )

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            inner.shutdown(timeout_millis=timeout_millis)

    return PeriodicExportingMetricReader(
        Dropping(),
        export_interval_millis=METRICS_INTERVAL_MS,
        export_timeout_millis=settings.get("telemetry.export_timeout") * 1000,
    )


def _install_metrics(settings: Settings, resource: Any, drops: _Drops) -> Any:
    """livekit's histograms and counters (`lk.agents.turn.e2e_latency`, `...llm_ttft`, usage) come
    from the global meter provider, so this sets it; None when another was set first (the global
    is set once per process)."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider

    provider = MeterProvider(resource=resource, metric_readers=[_metric_reader(settings, drops)])
    metrics.set_meter_provider(provider)  # at exit the SDK exports what is left (shutdown_on_exit)
    if metrics.get_meter_provider() is not provider:
        provider.shutdown()
        logger.warning("telemetry: another meter provider was set first; metrics are not exported")
        return None
    return provider


def install(settings: Settings) -> Any:
    """Set livekit's tracer provider once per process (idempotent); None when telemetry is off."""
    global _installed, _meters
    if not enabled(settings):
        return None
    with _lock:
        if _installed is not None:
            return _installed
        from livekit.agents.telemetry import set_tracer_provider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased

        from handler.observe.turn_traces import SessionSampler, TurnTracerProvider

        # the exporters log a stack per failed batch; _Drops says it once instead
        for name in ("opentelemetry.exporter.otlp.proto.http", "opentelemetry.exporter.otlp.proto.grpc"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        resource = Resource.create({"service.name": settings.get("telemetry.service_name")})
        provider = TurnTracerProvider(  # a trace per user turn (handler/observe/turn_traces.py)
            resource=resource,
            sampler=ParentBased(SessionSampler(settings.get("telemetry.sample_ratio"))),
        )
        provider.add_span_processor(_IdsProcessor())  # type: ignore[arg-type]
        drops = _Drops()
        exporter = _WarnOnce(_exporter(settings, "traces"), drops)
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter,  # type: ignore[arg-type]
                max_queue_size=settings.get("telemetry.max_queue_size"),
                schedule_delay_millis=1000,
                export_timeout_millis=int(settings.get("telemetry.export_timeout") * 1000),
            )
        )
        set_tracer_provider(provider, allow_pii=bool(settings.get("telemetry.capture_content")))
        provider.drops = drops  # type: ignore[attr-defined]  # what was exported and dropped
        atexit.register(provider.shutdown)  # the last batch goes out (bounded by export_timeout)
        _meters = _install_metrics(settings, resource, drops)
        _installed = provider
        logger.info(
            "telemetry: exporting spans and metrics over OTLP/%s to %s",
            settings.get("telemetry.protocol"),
            urlsplit(settings.get("telemetry.endpoint")).netloc,
        )
        return provider


def flush(timeout: float = 5.0) -> None:
    """Send what is batched now (blocking, at most `timeout` per signal). A job process needs it:
    multiprocessing ends it with os._exit, so the atexit shutdown never runs there and the job's
    last spans (agent_session ends with the session) would be lost."""
    if _installed is not None:
        _installed.force_flush(int(timeout * 1000))
    if _meters is not None:
        _meters.force_flush(int(timeout * 1000))


def ids_attributes(ids: Mapping[str, str]) -> dict[str, str]:
    return {ID_PREFIX + k: str(v) for k, v in ids.items()}
