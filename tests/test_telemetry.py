"""Traces over OTLP: `simulate` exports livekit's spans to an in-process receiver that decodes the
real protobuf, a trace per user turn linked to the session's; an unreachable collector costs the
call nothing."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from support.otlp_receiver import OTLPReceiver, ReceivedSpan

from handler import config
from handler.logs.parse import parse_line
from handler.pipeline.turns import TURN_MESSAGE, TurnRecord, from_line
from handler.registry import load_checked

SAID = ["where is my order", "thank you very much"]
TOKEN = "planted-otlp-token-0123456789"


def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "traced.toml"
    path.write_text("".join(f'[[turns]]\nsay = "{s}"\n' for s in SAID))
    return path


async def simulate(scenario: Path | str, **env: str) -> tuple[int, dict[str, Any], str]:
    """`python -m handler simulate` in a child process, so this loop keeps serving the receiver."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "handler",
        "simulate",
        str(scenario),
        "--env",
        "dev",
        "--json",
        "-v",  # the log lines on stderr, not in a file
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    return proc.returncode, json.loads(out), out.decode() + err.decode()


def test_telemetry_settings_are_validated(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDLER_TELEMETRY__ENDPOINT", "localhost:4318")
    monkeypatch.setenv("HANDLER_TELEMETRY__SAMPLE_RATIO", "2")
    monkeypatch.setenv("HANDLER_TELEMETRY__PROTOCOL", "udp")
    monkeypatch.setenv("HANDLER_TELEMETRY__HEADERS_ENV", "MY_OTLP_HEADERS")
    with pytest.raises(config.ConfigError) as e:
        load_checked("dev")
    text = "\n".join(e.value.lines())
    assert "telemetry.endpoint = 'localhost:4318'" in text and "must be an http(s) URL" in text
    assert "telemetry.sample_ratio = 2" in text and "telemetry.protocol = 'udp'" in text
    assert "MY_OTLP_HEADERS: named by telemetry.headers_env" in text
    monkeypatch.setenv("MY_OTLP_HEADERS", f"authorization=Bearer {TOKEN}")
    monkeypatch.setenv("HANDLER_TELEMETRY__ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.delenv("HANDLER_TELEMETRY__SAMPLE_RATIO")
    monkeypatch.delenv("HANDLER_TELEMETRY__PROTOCOL")
    settings, _ = load_checked("dev")
    assert f"authorization=Bearer {TOKEN}" in settings.secret_values()  # redacted from every log line


def traced(ratio: float) -> tuple[Any, Any]:
    """A turn-splitting provider exporting to memory (the SDK's own exporter), and its tracer."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased

    from handler.observe.turn_traces import SessionSampler, TurnTracerProvider

    provider = TurnTracerProvider(sampler=ParentBased(SessionSampler(ratio)))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory, provider.get_tracer("livekit-agents")


def livekit_session(tracer: Any, turns: int) -> None:
    """The spans as livekit 1.8 starts them: turn spans with the session's root context as parent
    (audio_recognition._ensure_user_turn_span, agent_activity._agent_turn), the rest nested."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    session = tracer.start_span("agent_session")
    with trace.use_span(session):
        root = otel_context.get_current()
    tracer.start_span("agent_turn", context=root).end()  # a greeting, before any user turn
    for _ in range(turns):
        user = tracer.start_span("user_turn", context=root)
        with trace.use_span(user), tracer.start_as_current_span("eou_wait"):
            pass
        user.end()
        agent = tracer.start_span("agent_turn", context=root)
        with trace.use_span(agent), tracer.start_as_current_span("llm_node"):
            tracer.start_span("tts_node").end()
        agent.end()
    tracer.start_span("session_close", context=root).end()
    session.end()


def test_each_user_turn_is_its_own_trace_and_the_session_keeps_its_own_spans() -> None:
    memory, tracer = traced(1.0)
    livekit_session(tracer, turns=2)
    livekit_session(tracer, turns=1)  # a second session in the process: its turns stay its own
    spans = memory.get_finished_spans()
    by_trace: dict[int, list[str]] = {}
    for s in spans:
        by_trace.setdefault(s.context.trace_id, []).append(s.name)
    assert sorted(sorted(names) for names in by_trace.values()) == sorted(
        [["agent_session", "agent_turn", "session_close"]] * 2
        + [["agent_turn", "eou_wait", "llm_node", "tts_node", "user_turn"]] * 3
    )
    sessions = [s for s in spans if s.name == "agent_session"]
    for session in sessions:
        turn_roots = [s for s in spans if s.name == "user_turn" and s.links[0].context == session.context]
        assert [link.context for link in session.links] == [r.context for r in turn_roots]
        assert all(r.parent is None for r in turn_roots)


def test_sampling_stays_per_session_a_turn_is_traced_exactly_when_its_session_is() -> None:
    memory, tracer = traced(0.5)
    for _ in range(40):
        livekit_session(tracer, turns=3)
    spans = memory.get_finished_spans()
    sessions = {s.context.span_id for s in spans if s.name == "agent_session"}
    turns_of = {
        i: [s for s in spans if s.name == "user_turn" and s.links[0].context.span_id == i] for i in sessions
    }
    assert 0 < len(sessions) < 40  # sampled by the ratio (a 2**-39 chance of all or none)
    assert all(len(turns) == 3 for turns in turns_of.values())  # a sampled session keeps every turn
    assert sum(s.name == "user_turn" for s in spans) == 3 * len(sessions)  # and no orphan turn traces


STAGES = ("user_turn", "eou_wait", "agent_turn", "llm_node", "tts_node")


def turn_lines(output: str) -> list[TurnRecord]:
    """The turn metrics lines (`handler.metrics`, message `turn`) read back as `logs analyze` does."""
    parsed = (parse_line(line) for line in output.splitlines())
    return [from_line(p.fields)[0] for p in parsed if p.msg == TURN_MESSAGE]


def one(spans: list[ReceivedSpan], name: str, attribute: str, value: float | None) -> ReceivedSpan:
    """The span of that name whose attribute is the line's value (a turn may hold a discarded
    preemptive generation too: the one that answered is the one the line measured)."""
    match = [
        s for s in spans if s.name == name and s.attributes.get(attribute) == pytest.approx(value, abs=0.001)
    ]
    assert len(match) == 1, (name, attribute, value, [s.attributes for s in spans if s.name == name])
    return match[0]


@pytest.mark.realtime
async def test_a_simulated_conversation_is_a_trace_per_turn_with_ids_and_the_metrics_lines_numbers() -> None:
    async with OTLPReceiver() as receiver:
        _, report, output = await simulate(
            "qa",
            HANDLER_TELEMETRY__ENDPOINT=receiver.endpoint,
            HANDLER_TELEMETRY__SERVICE_NAME="vh-test",
            HANDLER_TELEMETRY__HEADERS_ENV="OTLP_AUTH",
            OTLP_AUTH=f"authorization=Bearer {TOKEN}",
        )
    assert receiver.requests >= 1 and TOKEN not in output
    assert all(h.get("Authorization") == f"Bearer {TOKEN}" for h in receiver.headers)
    assert {s.resource.get("service.name") for s in receiver.spans} == {"vh-test"}
    # every span, the session's own and each turn's, carries the ids the log lines carry
    assert {s.attributes.get("voice_handler.session") for s in receiver.spans} == {"sim-qa"}
    lines = turn_lines(output)
    assert [r.n for r in lines] == [1, 2, 3, 4] and all(r.answered for r in lines)

    # one trace for the session (agent_session at its root), then one per user turn
    traces = list(receiver.traces().values())
    (session,) = [s for spans in traces for s in spans if s.name == "agent_session"]
    turns = [spans for spans in traces if spans[0].trace_id != session.trace_id]  # in start order
    assert len(turns) == len(lines), [[s.name for s in spans] for spans in traces]
    roots = []
    for line, spans in zip(lines, turns, strict=True):
        (root,) = [s for s in spans if not s.parent_id]
        assert root.name == "user_turn"
        roots.append(root)
        assert [(x.trace_id, x.span_id, x.attributes) for x in root.links] == [
            (session.trace_id, session.span_id, {"voice_handler.link": "session"})
        ]
        ids = {s.span_id for s in spans}
        assert all(s.parent_id in ids for s in spans if s is not root), "a turn's trace is one tree"
        assert {s.name for s in spans} >= set(STAGES)
        # the spans' numbers are this turn's metrics line's numbers
        assert root.attributes["lk.end_of_turn_delay"] == pytest.approx(line.end_of_turn_delay, abs=0.001)
        (eou,) = [s for s in spans if s.name == "eou_wait" and s.attributes["lk.eou.outcome"] == "committed"]
        assert eou.duration == pytest.approx(line.end_of_turn_delay, abs=0.05)
        one(spans, "agent_turn", "lk.e2e_latency", line.ttfa)
        llm = one(spans, "llm_node", "lk.response.ttft", line.llm_ttft)
        tts = one(spans, "tts_node", "lk.response.ttfb", line.tts_ttfb)
        assert llm.duration >= (line.llm_ttft or 0) and tts.duration >= (line.tts_ttfb or 0)
    # livekit's latency histograms reach the collector too, one observation per turn line
    for metric, attr in (
        ("e2e_latency", "ttfa"),
        ("llm_ttft", "llm_ttft"),
        ("end_of_turn_delay", "end_of_turn_delay"),
    ):
        count, total = receiver.totals(f"lk.agents.turn.{metric}")
        assert count == len(lines) and total == pytest.approx(
            sum(getattr(r, attr) for r in lines), abs=0.001 * count
        )
    # ... and the session span links to every turn, so the session view keeps its turns
    assert [(x.trace_id, x.span_id) for x in session.links] == [(r.trace_id, r.span_id) for r in roots]
    assert {s.name for spans in turns for s in spans}.isdisjoint({"session_start", "session_close"})
    # content capture is off by default: no transcript or reply in any span
    values = " ".join(str(v) for s in receiver.spans for v in s.attributes.values()).lower()
    assert not any(t["said"] in values or t["reply"].lower() in values for t in report["turns"])


@pytest.mark.realtime
async def test_an_unreachable_collector_neither_slows_nor_breaks_the_call(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, report, output = await simulate(
        scenario(tmp_path),
        HANDLER_TELEMETRY__ENDPOINT=f"http://127.0.0.1:{port}",
        HANDLER_TELEMETRY__EXPORT_TIMEOUT="1.0",
    )
    assert [t["recognized"] for t in report["turns"]] == SAID and not report["errors"]
    # the same pace as without telemetry (dev's local stack: ~1 s to first audio)
    assert all(t["ttfa"] < 2.5 for t in report["turns"]), report["turns"]
    assert output.count("the OTLP collector did not accept spans") == 1
