"""Crafted inputs a user (or someone handing them a file) may give a command: each ends in one
clear message and exit status 2, never a traceback, a silent misreading or a run out of memory;
the log analyzer counts a line it cannot read and goes on (issue 23, finding 6)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

DEEP = 100_000
"""Nesting far past Python's recursion limit (1000)."""


def pcm_wav(path: Path, bits: int, frames: int, *, rate: int = 16000, claimed: int | None = None) -> Path:
    """A PCM WAV with any sample width (the wave module writes only 8-32 bits), whose data chunk
    may claim more bytes than follow."""
    width = (bits + 7) // 8
    data = b"\x01" * (frames * width)
    size = len(data) if claimed is None else claimed
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * width, width, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", min(len(body), 0xFFFFFFFF)) + body)
    return path


def scenario_with(tmp_path: Path, wav: Path) -> Path:
    sc = tmp_path / "sc.toml"
    sc.write_text(f'name = "crafted"\n[[turns]]\nwav = "{wav}"\n')
    return sc


def refused(out, *expected: str) -> None:
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and 'File "' not in out.stderr
    for e in expected:
        assert e in out.stderr, out.stderr


@pytest.mark.parametrize(("bits", "frames"), [(40, 1601), (64, 1600)])
def test_a_wav_with_40_or_64_bit_samples_is_refused_not_misread(
    tmp_path: Path, cli, bits: int, frames: int
) -> None:
    wav = pcm_wav(tmp_path / f"{bits}.wav", bits, frames)
    out = cli("simulate", str(scenario_with(tmp_path, wav)), "--env", "dev")
    refused(out, f"{bits}-bit samples are not supported", "allowed: 8/16/24/32-bit PCM WAV", str(wav))


def test_a_wav_claiming_hours_of_audio_is_refused_before_it_is_read(tmp_path: Path, cli) -> None:
    wav = pcm_wav(tmp_path / "huge.wav", 16, 160, claimed=0xFFFF_FFF0)  # 37 hours at 16 kHz
    out = cli("simulate", str(scenario_with(tmp_path, wav)), "--env", "dev")
    refused(out, "is too long; allowed: up to 600 s a clip", str(wav))


def test_a_deeply_nested_scenario_is_refused(tmp_path: Path, cli) -> None:
    sc = tmp_path / "deep.toml"
    sc.write_text("name = " + "[" * DEEP + "]" * DEEP + "\n")
    refused(cli("simulate", str(sc), "--env", "dev"), "nested too deeply", str(sc))


def test_a_deeply_nested_settings_file_or_variable_is_refused(root: Path, cli) -> None:
    (root / "settings.toml").write_text("[default.llm]\nx = " + "[" * DEEP + "]" * DEEP + "\n")
    refused(cli("config", "check"), "settings.toml", "nested too deeply")
    (root / "settings.toml").unlink()
    out = cli("config", "check", env={"HANDLER_LLM__X": "{a=" * 5000 + "1" + "}" * 5000})
    refused(out, "HANDLER_LLM__X (from environment variable HANDLER_LLM__X): is nested too deeply")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("@format {this.nonexistent}", "DynaconfFormatError"),
        ("@jinja {{ this.x.y }}", "UndefinedError"),
        ("@jinja {{ 1/0 }}", "ZeroDivisionError"),
        ("@jinja {% for %}", "TemplateSyntaxError"),
    ],
)
def test_a_dynaconf_template_that_fails_is_named_with_its_error(
    root: Path, cli, value: str, error: str
) -> None:
    out = cli("config", "check", env={"HANDLER_LLM__INSTRUCTIONS": value})
    refused(out, "HANDLER_LLM__INSTRUCTIONS", "could not evaluate", error)
    (root / "settings.toml").write_text(f"[default.llm]\ninstructions = {json.dumps(value)}\n")
    refused(cli("config", "check"), "llm.instructions", str(root / "settings.toml"), error)


def test_logs_analyze_counts_a_deeply_nested_json_line_and_reads_on(tmp_path: Path, cli) -> None:
    log = tmp_path / "crafted.log"
    turn = {"ts": "2026-12-07T10:00:00.000Z", "level": "INFO", "logger": "handler.metrics", "msg": "turn"}
    log.write_text(
        json.dumps({**turn, "n": 1, "ttfa_ms": 900})
        + "\n"
        + '{"a": '
        + "[" * DEEP
        + "]" * DEEP
        + "}\n"
        + json.dumps({**turn, "n": 2, "ttfa_ms": 1100})
        + "\n"
    )
    out = cli("logs", "analyze", str(log), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert doc["turns"] == 2 and doc["lines"] == 3 and doc["malformed_lines"] == 1


def test_logs_analyze_of_an_unreadable_file_says_so_in_one_message(cli) -> None:
    if not Path("/proc/self/mem").exists():
        pytest.skip("no /proc here")
    out = cli("logs", "analyze", "/proc/self/mem")
    refused(out, "cannot read log file /proc/self/mem after 0 lines")
