"""The metrics plugin's turn lines and summary, as a production session writes them, and its
Prometheus series."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from handler.logs import analyze
from handler.registry import load_checked
from handler.sim import scenario, simulate


def ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


@pytest.mark.realtime
def test_a_production_session_logs_one_line_per_turn_and_a_summary_with_the_report_numbers(cli) -> None:
    out = cli("simulate", "noisy", "--env", "production", "--offline", "--json", "-v")
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    logs = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    # a loaded machine may add livekit's warnings (e.g. slow VAD inference); never an error
    assert not [entry for entry in logs if entry["level"] in ("ERROR", "CRITICAL")], logs
    ours = [entry for entry in logs if entry["logger"] == "handler.metrics"]
    assert [entry["msg"] for entry in ours] == ["turn"] * len(report["turns"]) + ["session summary"]
    assert all(entry["session"] == "sim-noisy" for entry in ours)
    # the lines and the report are written from the same records: the same numbers
    for line, turn in zip(ours, report["turns"], strict=False):
        assert line["ttfa_ms"] == ms(turn["ttfa"])
        assert line["eou_ms"] == ms(turn["end_of_turn_delay"])
        assert line["transcription_ms"] == ms(turn["transcription_delay"])
        assert line["llm_ttft_ms"] == ms(turn["llm_ttft"])
        assert line["llm_ttfs_ms"] == ms(turn["llm_ttfs"])
        assert line["tts_ttfb_ms"] == ms(turn["tts_ttfb"])
        assert line["interrupted"] == turn["interrupted"]
        assert line["false_interruptions"] == turn["false_interruptions"]
        assert line["answered"] is True
        assert line["ttfa_ms"] >= line["eou_ms"]  # the turn had to end before the agent spoke
        assert (line["retries"], line["errors"]) == (0, 0)
    summary, s = ours[-1], report["summary"]
    assert summary["turns"] == summary["answered"] == len(report["turns"]) == 2
    assert summary["ttfa_p50_ms"] == ms(s["ttfa_p50"]) and summary["ttfa_p95_ms"] == ms(s["ttfa_p95"])
    assert summary["false_interruptions"] == s["false_interruptions"] == 1
    assert summary["false_interruptions_per_min"] == s["false_interruptions_per_min"] > 0
    assert summary["llm_tokens"] > 0 and summary["tts_characters"] > 0
    # a regression guard only; benchmarks/log_volume.py measures the real figure (docs/measurements)
    assert len(ours) / (s["duration_s"] / 60) < 40
    # and `logs analyze` reads the same numbers back from the log
    analyzed = analyze(["-"], stdin=io.BytesIO(out.stderr.encode()))
    assert analyzed.turns == 2 and analyzed.session_summaries == 1
    assert analyzed.ttfa.percentile(50) == summary["ttfa_p50_ms"]
    assert analyzed.ttfa.percentile(95) == summary["ttfa_p95_ms"]
    assert analyzed.false_per_minute == s["false_interruptions_per_min"]


@pytest.mark.realtime
async def test_prometheus_series_take_each_turns_numbers(tmp_path: Path) -> None:
    # in-process, so the default registry is the one the plugin observes into
    sc = tmp_path / "one.toml"
    sc.write_text('[[turns]]\nsay = "what is the weather like today"\n')
    names = {
        "turns": ("voice_handler_turns_total", {}),
        "ttfa_n": ("voice_handler_time_to_first_audio_seconds_count", {}),
        "ttfa_sum": ("voice_handler_time_to_first_audio_seconds_sum", {}),
        **{
            f"{stage}_sum": ("voice_handler_stage_seconds_sum", {"stage": stage})
            for stage in ("eou", "transcription", "llm_ttft", "tts_ttfb")
        },
    }

    def sample() -> dict[str, float]:
        return {k: REGISTRY.get_sample_value(name, labels) or 0.0 for k, (name, labels) in names.items()}

    before = sample()
    settings, registry = load_checked("dev")
    report, _ = await simulate(settings, registry, scenario.load(sc))
    delta = {k: v - before[k] for k, v in sample().items()}

    (turn,) = report.turns
    assert delta["turns"] == delta["ttfa_n"] == 1
    assert delta["ttfa_sum"] == pytest.approx(turn.ttfa)
    assert delta["eou_sum"] == pytest.approx(turn.end_of_turn_delay)
    assert delta["transcription_sum"] == pytest.approx(turn.transcription_delay)
    assert delta["llm_ttft_sum"] == pytest.approx(turn.llm_ttft)
    assert delta["tts_ttfb_sum"] == pytest.approx(turn.tts_ttfb)
