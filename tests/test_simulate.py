"""Whole conversations through a real AgentSession with the offline stack, at real-time pace."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import BURST, BURST_MIN_INTERRUPTION, BURST_THRESHOLDS

from handler import audio
from handler.registry import load_checked
from handler.sim import Report, scenario, simulate, word_errors

LATENCY_FIELDS = ("ttfa", "ttfa_played", "end_of_turn_delay", "transcription_delay", "llm_ttft", "tts_ttfb")
TTFA_BOUND = 5.0
"""A generous upper bound on time to first audio (about 1 s is usual; a loaded machine adds some)."""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def run(sc_path: Path, env: str = "dev", **overrides: object) -> Report:
    settings, registry = load_checked(env)
    if overrides:
        settings = settings.with_overrides(overrides, "test")
    report, _ = await simulate(settings, registry, scenario.load(sc_path))
    return report


def answered(report: Report) -> None:
    """Invariants of every run: each scripted turn got its record, its reply and its latencies;
    time to first audio above the floor the configuration sets and under a generous bound."""
    assert not report.errors, report.errors
    for turn in report.turns:
        assert turn.record is not None and turn.reply_text, turn
        for f in LATENCY_FIELDS:
            assert getattr(turn, f) is not None and getattr(turn, f) >= 0, (turn.n, f)
        # the turn had to end (endpointing delay) and the responder's first token (0.3 s) come
        # before any audio
        assert 0.5 + 0.3 < turn.ttfa < TTFA_BOUND, turn
        assert 0.5 + 0.3 < turn.ttfa_played < TTFA_BOUND, turn
        assert turn.ttfa >= turn.end_of_turn_delay


@pytest.mark.realtime
async def test_a_question_is_recognized_answered_and_timed(tmp_path: Path) -> None:
    sc = write(
        tmp_path / "two.toml",
        '[[turns]]\nsay = "what is the weather like today"\n[[turns]]\nsay = "where is my order"\n',
    )
    report = await run(sc)
    answered(report)
    first, second = report.turns
    assert first.user_text == "what is the weather like today"
    assert second.user_text == "where is my order"
    assert "sunny" in first.reply_text and "shipped" in second.reply_text
    for turn in report.turns:
        assert 0.2 < turn.llm_ttft < 1.0  # the responder's 0.3 s, plus scheduling
        assert not turn.interrupted and turn.false_interruptions == 0
    s = report.summary()
    assert s["turns"] == s["answered"] == 2 and s["wer"] == 0.0 and s["errors"] == 0
    assert s["ttfa_p50"] <= s["ttfa_p95"]


@pytest.mark.realtime
async def test_a_genuine_barge_in_stops_the_agent_and_is_answered() -> None:
    report = await run(scenario.resolve("barge_in"))
    answered(report)
    story, barge = report.turns
    assert story.interrupted and barge.kind == "barge_in"
    assert not barge.interrupted
    assert report.summary()["interruptions"] == 1
    assert report.summary()["false_interruptions"] == 0


@pytest.mark.realtime
async def test_noise_and_coughs_are_ignored_and_a_backchannel_is_a_false_interruption() -> None:
    # the sounds' margins are proven at every VAD phase by tests/test_scenario_sounds.py
    report = await run(scenario.resolve("noisy"))
    answered(report)
    story, thanks = report.turns
    assert story.false_interruptions == 1, story  # the "uh-huh" paused the agent, which resumed
    assert not story.interrupted, story  # the reply played to its end
    assert thanks.user_text == "thank you very much"
    assert report.summary()["false_interruptions_per_min"] > 0


@pytest.mark.realtime
@pytest.mark.parametrize("threshold,pauses", sorted(BURST_THRESHOLDS.items()))
async def test_interruption_threshold_decides_whether_a_short_backchannel_pauses_the_agent(
    threshold: float, pauses: bool
) -> None:
    # tests/scenarios/burst.toml: a 0.4 s "uh huh" that the VAD counts as 0.86-1.02 s of speech
    # (at every window phase, tests/test_scenario_sounds.py); min_interruption_duration 0.8 asks
    # for 0.48 s at threshold 0.3 and 1.44 s at 0.9: far from both
    report = await run(
        BURST,
        **{
            "turn.interruption_threshold": threshold,
            "turn.min_interruption_duration": BURST_MIN_INTERRUPTION,
            "turn.false_interruption_timeout": 1.0,
        },
    )
    answered(report)
    (turn,) = report.turns
    assert not turn.interrupted  # fillers only: a pause at most, then the reply resumes
    assert turn.false_interruptions == (1 if pauses else 0)


def test_word_errors_counts_edits() -> None:
    assert word_errors("what time do you open", "what you open") == (2, 5)
    assert word_errors("Hello, world!", "hello world") == (0, 2)


# ------------------------------------------------------------------------ the command line


@pytest.mark.realtime
def test_simulate_json_has_the_documented_keys_and_out_writes_wavs(tmp_path: Path, cli) -> None:
    sc = write(
        tmp_path / "one.toml",
        'name = "one"\n[[turns]]\nsay = "thank you very much"\n[expect]\ninterruptions = 0\n',
    )
    out = cli("simulate", str(sc), "--env", "dev", "--json", "--out", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert set(doc) == {
        *("scenario", "env", "providers", "settings", "turns", "summary", "expect", "errors"),
        "ended",  # issue 14: why a session ended early (null: it did not)
    }
    assert doc["ended"] is None
    assert set(doc["summary"]) == {
        "turns",
        "answered",
        "duration_s",
        "ttfa_p50",
        "ttfa_p95",
        "interruptions",
        "false_interruptions",
        "false_interruptions_per_min",
        "premature_cutoffs",  # issue 11: replies begun while the user was mid-sentence
        "agent_speech_s",
        "wer",
        "errors",
        "breakdown_p50",
    }
    assert doc["summary"]["premature_cutoffs"] == 0 and doc["summary"]["agent_speech_s"] > 0.5
    (turn,) = doc["turns"]
    assert set(turn) == {
        "n",
        "kind",
        "said",
        "recognized",
        "reply",
        "answered",
        *LATENCY_FIELDS,
        "llm_ttfs",
        "floor",
        "overhead",
        "interrupted",
        "false_interruptions",
        "retries",
        "errors",
        "premature_cutoffs",
        "notes",
    }
    assert doc["providers"] == {
        "vad": "silero",
        "stt": "local",
        "llm": "local",
        "tts": "local",
        "turn": "vad",
    }
    # a newcomer reads progress on stderr and the table (here JSON) on stdout; the environment's
    # log lines (dev: DEBUG) go to a file the run names
    log = tmp_path / "out" / "session.log"
    assert f"log lines in {log}" in out.stderr and "turn 1:" in out.stderr
    assert " DEBUG " not in out.stderr and " DEBUG " in log.read_text()
    assert "INFO handler.metrics turn n=1" in log.read_text()
    for name in ("user.wav", "agent.wav"):
        with wave.open(str(tmp_path / "out" / name)) as w:
            assert (w.getframerate(), w.getnchannels()) == (16000, 1) and w.getnframes() > 16000
    assert json.loads((tmp_path / "out" / "report.json").read_text())["summary"] == doc["summary"]


def bad(tmp_path: Path, cli, text: str, *expected: str) -> None:
    sc = write(tmp_path / "bad.toml", text)
    out = cli("simulate", str(sc), "--env", "dev")  # the offline stack: no keys needed
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    for e in expected:
        assert e in out.stderr, out.stderr


def test_an_empty_scenario_is_refused(tmp_path: Path, cli) -> None:
    bad(tmp_path, cli, 'name = "empty"\n', "needs at least one user turn")


def test_unknown_keys_are_refused_with_a_suggestion(tmp_path: Path, cli) -> None:
    bad(
        tmp_path,
        cli,
        '[[turns]]\nsay = "hi"\npuase = 1\n[[turns.during_reply]]\nkind = "sneeze"\n',
        "turns[1]: unknown key 'puase' (did you mean 'pause'?)",
        "kind = 'sneeze': must be one of",
    )


def test_values_of_the_wrong_type_are_refused(tmp_path: Path, cli) -> None:
    bad(
        tmp_path,
        cli,
        '[[turns]]\nsay = "hi"\nduring_reply = 5\n[expect]\ninterruptions = "one"\n',
        "turns[1].during_reply: must be a list",
        "expect.interruptions = 'one': must be a whole number",
    )


def test_a_missing_scenario_lists_the_bundled_ones(cli) -> None:
    out = cli("simulate", "nosuch", "--env", "dev")
    assert out.returncode == 2 and "bundled scenarios: barge_in, noisy, qa" in out.stderr


@pytest.mark.parametrize(
    "content,expected",
    [
        (None, "file not found"),
        (b"", "file is empty"),
        (b"RIFF\x00\x00garbage", "not a PCM WAV file"),
        (b"this is text, not audio\n" * 10, "not a PCM WAV file"),
    ],
)
def test_bad_audio_files_are_refused_naming_the_file(
    tmp_path: Path, cli, content: bytes | None, expected: str
) -> None:
    if content is not None:
        (tmp_path / "turn.wav").write_bytes(content)
    bad(tmp_path, cli, '[[turns]]\nwav = "turn.wav"\n', "turn.wav", expected)


def test_a_cloud_environment_without_keys_is_refused_before_anything_runs(tmp_path: Path, cli) -> None:
    sc = write(tmp_path / "one.toml", '[[turns]]\nsay = "hello"\n')
    out = cli("simulate", str(sc), "--env", "production")
    assert out.returncode == 2 and "ELEVEN_API_KEY" in out.stderr and "Traceback" not in out.stderr


def test_stereo_44k_wavs_are_converted(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(np.stack([tone, tone], axis=1).tobytes())
    pcm, notes = audio.read_wav(path)
    assert len(pcm) == 16000 and notes == ["mixed 2 channels to mono", "resampled 44100 Hz to 16000 Hz"]
    assert np.abs(pcm).max() == pytest.approx(8000, rel=0.05)
