"""Every sound a scenario's user makes, as 16 kHz mono int16: WAV files as given (converted),
text spoken by the local TTS in the scenario's user voice, noises generated."""

from __future__ import annotations

from typing import Any

import numpy as np
from livekit import rtc

from handler import audio
from handler.config import Settings
from handler.registry import Registry
from handler.sim.scenario import Event, Scenario

BABBLE_TEXT = "the quick brown fox jumps over the lazy dog while seven people talk at once"


async def make_clips(scenario: Scenario, registry: Registry, settings: Settings) -> list[np.ndarray]:
    """The scenario's clips in order: each turn's utterance, then its during-reply sounds."""
    from handler.runtime import Runtime

    user_tts = registry.build(
        "tts",
        settings.with_overrides({"tts.local.voice": scenario.user_voice}, "scenario"),
        Runtime(settings, None, None),
        name="local",
    )

    async def speak(text: str) -> np.ndarray:
        frames = [ev.frame async for ev in user_tts.synthesize(text)]
        frame = rtc.combine_audio_frames(frames)
        pcm = np.frombuffer(frame.data, np.int16)
        return audio.resample(pcm, frame.sample_rate, audio.RATE)

    async def babble(duration: float, level: float) -> np.ndarray:
        # speech played backwards: speech's spectrum and rhythm, no words in it
        pcm = (await speak(BABBLE_TEXT))[::-1]
        return audio.at_level(np.resize(pcm, int(duration * audio.RATE)), level)

    async def clip(say: str | None, wav: Any, ev: Event | None = None) -> np.ndarray:
        if wav is not None:
            pcm, _ = audio.read_wav(wav)
            return pcm
        if say is not None:
            return await speak(say)
        assert ev is not None
        if ev.kind == "noise":
            return audio.noise_burst(ev.duration, ev.level)
        if ev.kind == "babble":
            return await babble(ev.duration, ev.level)
        return audio.click(ev.duration, ev.level)

    try:  # the TTS is closed whatever a clip does
        out: list[np.ndarray] = []
        for t in scenario.turns:
            out.append(await clip(t.say, t.wav))
            for ev in t.during_reply:
                out.append(await clip(ev.say, ev.wav, ev))
    finally:
        await user_tts.aclose()
    return out
