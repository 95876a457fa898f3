"""An in-process OTLP/HTTP receiver: decodes the real protobuf the OpenTelemetry exporters send
(`ExportTraceServiceRequest` to `POST /v1/traces`, `ExportMetricsServiceRequest` to
`POST /v1/metrics`), and keeps the spans and metric points for tests."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class ReceivedLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    links: list[ReceivedLink] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass
class ReceivedPoint:
    """One data point of a metric as exported: a histogram's count and sum, or a sum's value."""

    metric: str
    kind: str
    """"histogram", "sum" or "gauge"."""
    attributes: dict[str, Any]
    count: int
    total: float


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind and kind not in ("array_value", "kvlist_value") else str(v)


@dataclass
class OTLPReceiver:
    spans: list[ReceivedSpan] = field(default_factory=list)
    points: list[ReceivedPoint] = field(default_factory=list)
    """In the order received: with cumulative temporality (the exporters' default) a metric's last
    point holds its totals."""
    requests: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    _runner: Any = None
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _read(self, request: web.Request, message: Any) -> Any:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        message.ParseFromString(body)
        self.requests += 1
        self.headers.append(dict(request.headers))
        return message

    async def _metrics(self, request: web.Request) -> web.Response:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
            ExportMetricsServiceResponse,
        )

        message = await self._read(request, ExportMetricsServiceRequest())
        for rm in message.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    for p in getattr(m, kind).data_points:
                        histogram = kind in ("histogram", "exponential_histogram")
                        value = p.sum if histogram else getattr(p, p.WhichOneof("value"))
                        self.points.append(
                            ReceivedPoint(
                                metric=m.name,
                                kind=kind,
                                attributes={a.key: _value(a.value) for a in p.attributes},
                                count=p.count if histogram else 1,
                                total=value,
                            )
                        )
        return web.Response(
            body=ExportMetricsServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    async def _traces(self, request: web.Request) -> web.Response:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        message = await self._read(request, ExportTraceServiceRequest())
        for rs in message.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            resource=resource,
                            links=[
                                ReceivedLink(
                                    trace_id=link.trace_id.hex(),
                                    span_id=link.span_id.hex(),
                                    attributes={a.key: _value(a.value) for a in link.attributes},
                                )
                                for link in s.links
                            ],
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    async def __aenter__(self) -> OTLPReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    def named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name]

    def totals(self, metric: str) -> tuple[int, float]:
        """A cumulative metric's (count, sum) over all its series: each series' latest point."""
        latest = {frozenset(p.attributes.items()): p for p in self.points if p.metric == metric}
        return sum(p.count for p in latest.values()), sum(p.total for p in latest.values())

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """trace id -> its spans by start time, traces in the order they started."""
        out: dict[str, list[ReceivedSpan]] = {}
        for s in sorted(self.spans, key=lambda s: s.start_ns):
            out.setdefault(s.trace_id, []).append(s)
        return out
