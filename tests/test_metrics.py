"""The metrics plugin's turn lines and summary, as a production session writes them."""

from __future__ import annotations

import json

import pytest


def ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


@pytest.mark.realtime
def test_a_production_session_logs_one_line_per_turn_and_a_summary_with_the_right_numbers(cli) -> None:
    out = cli("simulate", "noisy", "--env", "production", "--offline", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    logs = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    # nothing but the turn lines and the summary: no warnings, no library chatter
    assert [entry["msg"] for entry in logs] == ["turn"] * len(report["turns"]) + ["session summary"]
    assert all(entry["logger"] == "handler.metrics" and entry["session"] == "sim-noisy" for entry in logs)
    for line, turn in zip(logs, report["turns"], strict=False):
        assert line["ttfa_ms"] == ms(turn["e2e_latency"])
        assert line["eou_ms"] == ms(turn["end_of_turn_delay"])
        assert line["transcription_ms"] == ms(turn["transcription_delay"])
        assert line["llm_ttft_ms"] == ms(turn["llm_ttft"])
        assert line["tts_ttfb_ms"] == ms(turn["tts_ttfb"])
        assert line["interrupted"] == turn["interrupted"]
        assert line["false_interruptions"] == turn["false_interruptions"]
        assert line["ttfa_ms"] >= line["eou_ms"]  # the turn had to end before the agent spoke
        assert (line["retries"], line["errors"]) == (0, 0)
    summary = logs[-1]
    assert summary["turns"] == len(report["turns"]) == 2
    assert summary["false_interruptions"] == 1 and summary["false_interruptions_per_min"] > 0
    assert summary["llm_tokens"] > 0 and summary["tts_characters"] > 0
    # a regression guard only; benchmarks/log_volume.py measures the real figure for README
    assert len(logs) / (report["summary"]["duration_s"] / 60) < 40
