"""Traces over OTLP: `simulate` exports livekit's spans to an in-process receiver that decodes the
real protobuf; an unreachable collector costs the call nothing."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from handler import config
from handler.registry import load_checked
from handler.testing.otlp_receiver import OTLPReceiver

SAID = ["where is my order", "thank you very much"]
TOKEN = "planted-otlp-token-0123456789"


def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "traced.toml"
    path.write_text("".join(f'[[turns]]\nsay = "{s}"\n' for s in SAID))
    return path


async def simulate(path: Path, **env: str) -> tuple[int, dict[str, Any], str]:
    """`python -m handler simulate` in a child process, so this loop keeps serving the receiver."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "handler",
        "simulate",
        str(path),
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


@pytest.mark.realtime
async def test_a_simulated_conversation_reaches_the_receiver_with_ids_and_consistent_durations(
    tmp_path: Path,
) -> None:
    async with OTLPReceiver() as receiver:
        _, report, output = await simulate(
            scenario(tmp_path),
            HANDLER_TELEMETRY__ENDPOINT=receiver.endpoint,
            HANDLER_TELEMETRY__SERVICE_NAME="vh-test",
            HANDLER_TELEMETRY__HEADERS_ENV="OTLP_AUTH",
            OTLP_AUTH=f"authorization=Bearer {TOKEN}",
        )
    turns = report["turns"]
    assert [t["recognized"] for t in turns] == SAID
    assert receiver.requests >= 1 and TOKEN not in output
    assert all(h.get("Authorization") == f"Bearer {TOKEN}" for h in receiver.headers)
    assert {s.resource.get("service.name") for s in receiver.spans} == {"vh-test"}
    # livekit's layout: one trace per session, each turn a user_turn and an agent_turn in it
    assert len({s.trace_id for s in receiver.spans}) == 1
    session = (
        f"sim-{Path(report['scenario']).stem}" if "/" in report["scenario"] else f"sim-{report['scenario']}"
    )
    by_name = {
        n: sorted(receiver.named(n), key=lambda s: s.start_ns)
        for n in ("user_turn", "agent_turn", "eou_wait", "llm_node", "tts_node")
    }
    assert len(by_name["user_turn"]) == len(by_name["agent_turn"]) == len(SAID)
    for spans in by_name.values():
        assert spans and all(s.attributes.get("voice_handler.session") == session for s in spans)
    # the spans' numbers are the turn's metrics line's numbers
    for turn, agent, eou in zip(turns, by_name["agent_turn"], by_name["eou_wait"], strict=True):
        assert agent.attributes["lk.e2e_latency"] == pytest.approx(turn["ttfa"], abs=0.002)
        assert eou.duration == pytest.approx(turn["end_of_turn_delay"], abs=0.05)
    llm_by_ttft = [s for s in by_name["llm_node"] if "lk.response.ttft" in s.attributes]
    for turn in turns:
        match = [
            s
            for s in llm_by_ttft
            if s.attributes["lk.response.ttft"] == pytest.approx(turn["llm_ttft"], abs=0.002)
        ]
        assert match and match[0].duration >= turn["llm_ttft"]
    assert all(s.duration >= t["tts_ttfb"] for s, t in zip(by_name["tts_node"][-2:], turns, strict=True))
    # content capture is off by default: no transcript or reply in any span
    values = " ".join(str(v) for s in receiver.spans for v in s.attributes.values()).lower()
    assert not any(t["said"] in values or t["reply"].lower() in values for t in turns)


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
