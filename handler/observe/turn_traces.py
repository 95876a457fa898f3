"""One trace per user turn. livekit-agents 1.8 parents every turn's spans to the `agent_session`
span (`user_turn` and `agent_turn` are started with `context=session._root_span_context`), so a
whole conversation is one trace: hours long for a long call, and a backend's trace list shows
calls, not turns. Here each `user_turn` starts a trace of its own, linked both ways to the session
span (the turn root links to `agent_session`; `agent_session` gains a link to every turn), and
the `agent_turn` that answers it (with its `llm_node`, `tts_node`, tools...) joins that trace.

Where to cut. The ids are fixed when a span starts, from the parent the caller passes:
* a SpanProcessor sees the span after its trace id is chosen, and cannot change it;
* a Sampler decides record/drop and may add attributes, not change the trace id or the parent;
* an IdGenerator is asked for a trace id only for a span with no parent, and livekit gives
  every turn span the session as parent;
* swapping `session._root_span_context` per turn would need a signal at the moment livekit opens
  a `user_turn` (there is none: `user_state_changed` comes later), and would also move the
  session's own spans that read it (`session_close`, RPC, AMD, loop stalls) into whichever turn
  is open.
So the tracer is cut: the provider hands livekit a tracer that, for a span whose parent is an
`agent_session` span, re-roots a `user_turn` and re-parents an `agent_turn` to the session's
latest `user_turn`. Every other span is started untouched: children follow their parents, and
the session's own spans stay in the session trace. A turn is therefore everything from the user
starting to speak until they start again; an agent turn before the first user turn (a greeting)
stays in the session trace.

Sampling stays per session (`telemetry.sample_ratio` is the share of sessions traced): a turn
root is sampled when its session is (`SessionSampler`), and an unsampled session's turns are not
re-rooted at all.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.util._decorator import _agnosticcontextmanager  # livekit's tracer uses it too
from opentelemetry.util.types import Attributes

from handler.observe.span_ids import ID_PREFIX, ids_of

SESSION_SPAN = "agent_session"
TURN_ROOT = "user_turn"
TURN_MEMBERS = frozenset({"agent_turn"})
"""Spans livekit parents to the session that belong to the open user turn instead."""
LINK_KIND = ID_PREFIX + "link"
"""Link attribute: "session" on a turn root's link to its session, "turn" on the reverse."""


class TurnTracerProvider(TracerProvider):
    """An SDK TracerProvider whose tracers start a trace per user turn (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # each live `agent_session` span -> the context of its latest user turn (None before the
        # first); keyed weakly by the span object, so an entry goes with its session
        self._turns: weakref.WeakKeyDictionary[Span, otel_context.Context | None] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()  # livekit's loop monitor starts spans from its own thread

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace_api.Tracer:
        return _TurnTracer(super().get_tracer(*args, **kwargs), self)

    def _start(
        self,
        inner: trace_api.Tracer,
        name: str,
        context: otel_context.Context | None,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link] | None,
        **rest: Any,
    ) -> Span:
        parent = trace_api.get_current_span(context)
        with self._lock:
            of_session = (name == TURN_ROOT or name in TURN_MEMBERS) and parent in self._turns
            if of_session and name == TURN_ROOT and parent.is_recording():
                session_ctx = parent.get_span_context()
                # the session's ids (job, room, session) on the root, as on every span under it
                ids = ids_of(parent)
                span = inner.start_span(
                    name,
                    otel_context.Context(),  # empty, not None: None means "the current context"
                    kind,
                    {**ids, **dict(attributes or {})},
                    [Link(session_ctx, {LINK_KIND: "session"}), *(links or ())],
                    **rest,
                )
                parent.add_link(span.get_span_context(), {LINK_KIND: "turn"})
                self._turns[parent] = trace_api.set_span_in_context(span)
                return span
            if of_session and name in TURN_MEMBERS:
                context = self._turns[parent] or context  # before the first user turn: the session
        span = inner.start_span(name, context, kind, attributes, links, **rest)
        if name == SESSION_SPAN and span.is_recording():
            with self._lock:
                self._turns[span] = None
        return span


class _TurnTracer(trace_api.Tracer):
    """Delegates to the SDK tracer; every span start goes through the provider's turn rule."""

    def __init__(self, inner: trace_api.Tracer, provider: TurnTracerProvider) -> None:
        self._inner = inner
        self._provider = provider

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        return self._provider._start(
            self._inner,
            name,
            context,
            kind,
            attributes,
            links,
            start_time=start_time,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        )

    @_agnosticcontextmanager  # the API's decorator: usable in `with`, and on sync or async functions
    def start_as_current_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )
        with trace_api.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


class SessionSampler(Sampler):
    """For spans with no parent: a turn root follows its session's decision (it is only re-rooted
    when the session is sampled); any other root is sampled by trace id at `ratio`."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        for link in links or ():
            if (link.attributes or {}).get(LINK_KIND) == "session":
                sampled = link.context.trace_flags.sampled
                return SamplingResult(Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP, attributes)
        return self._ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"SessionSampler({self._ratio.get_description()})"
