"""A scenario's questions as one WAV for a browser's fake microphone (Chromium's
`--use-file-for-fake-audio-capture`, which plays the file in a loop): silence, then each turn's
utterance followed by `gap` seconds of silence for the agent to answer in. Used by the browser tests
and measurements/web_ttfa.py; 16-bit PCM, 16 kHz mono (what the flag reads)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from handler import audio

LEAD = 2.0
"""Seconds of silence before the first question: the page joins and the agent's session starts."""


def write(scenario: str | Path, path: Path, *, gap: float = 6.0, env: str = "dev") -> list[float]:
    """Write the WAV; returns the second at which each utterance ends in the file."""
    from handler.config import load
    from handler.registry import Registry
    from handler.sim import scenario as scenarios
    from handler.sim.clips import make_clips

    sc = scenarios.load(scenarios.resolve(str(scenario)))
    clips = asyncio.run(make_clips(sc, Registry.load(), load(env)))
    silence = np.zeros(int(gap * audio.RATE), np.int16)
    parts: list[np.ndarray] = [np.zeros(int(LEAD * audio.RATE), np.int16)]
    ends: list[float] = []
    for clip in clips:
        parts.append(clip)
        ends.append((sum(len(p) for p in parts) / audio.RATE) - audio.trailing_silence(clip))
        parts.append(silence)
    audio.write_wav(path, np.concatenate(parts))
    return ends


def phrases(scenario: str | Path) -> str:
    """The scenario's spoken texts as the JSON list the local recognizer's `phrases` setting takes
    (HANDLER_STT__LOCAL__PHRASES): it hears a question asked through Opus and a browser as one of them."""
    import json

    from handler.sim import scenario as scenarios

    sc = scenarios.load(scenarios.resolve(str(scenario)))
    return json.dumps([t.say for t in sc.turns if t.say])
