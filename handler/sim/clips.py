"""Every sound a scenario's user makes, as 16 kHz mono int16: WAV files as given (converted),
text spoken by the local TTS in the scenario's user voice and rate, noises generated."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc

from handler import audio
from handler.config import Settings
from handler.registry import Registry
from handler.sim.scenario import Event, Scenario

BABBLE_TEXT = "the quick brown fox jumps over the lazy dog while seven people talk at once"


@dataclass
class Sounds:
    clips: list[np.ndarray]
    """The scenario's clips in order: each turn's utterance, then its during-reply sounds."""
    spoken: dict[str, np.ndarray] = field(default_factory=dict)
    """Each text spoken on its own (a turn's part, a backchannel, a barge-in) -> its audio, as it
    sits inside the clips: what `bench`'s known-transcript recognizer looks for."""


async def make_clips(scenario: Scenario, registry: Registry, settings: Settings) -> list[np.ndarray]:
    """The scenario's clips in order: each turn's utterance, then its during-reply sounds."""
    return (await make_sounds(scenario, registry, settings)).clips


def _leading_silence(pcm: np.ndarray) -> float:
    return audio.trailing_silence(pcm[::-1])


async def make_sounds(scenario: Scenario, registry: Registry, settings: Settings) -> Sounds:
    """The clips, and the audio of every text spoken in them."""
    from handler.plan import resolve

    voice: dict[str, Any] = {"tts.local.voice": scenario.user_voice}
    if scenario.user_rate is not None:
        voice["tts.local.rate"] = scenario.user_rate
    user_tts = resolve(settings, registry).build_other("tts", "local", voice, "scenario")
    spoken: dict[str, np.ndarray] = {}

    async def speak(text: str) -> np.ndarray:
        frames = [ev.frame async for ev in user_tts.synthesize(text)]
        frame = rtc.combine_audio_frames(frames)
        pcm = np.frombuffer(frame.data, np.int16)
        return audio.resample(pcm, frame.sample_rate, audio.RATE)

    async def say(text: str) -> np.ndarray:
        spoken[text] = await speak(text)
        return spoken[text]

    async def turn_clip(turn: Any) -> np.ndarray:
        if turn.wav is not None or len(turn.parts) < 2:
            return await clip(turn.say, turn.wav)
        # a mid-sentence pause: the parts with exactly `hesitation` s of silence between voices
        parts = [await say(p) for p in turn.parts]
        gap = np.zeros(round(turn.hesitation * audio.RATE), np.int16)
        joined: list[np.ndarray] = []
        for i, pcm in enumerate(parts):
            lead = round(_leading_silence(pcm) * audio.RATE) if i else 0
            tail = round(audio.trailing_silence(pcm) * audio.RATE) if i < len(parts) - 1 else 0
            joined += [pcm[lead : len(pcm) - tail], *([gap] if i < len(parts) - 1 else [])]
        return np.concatenate(joined)

    async def babble(duration: float, level: float) -> np.ndarray:
        # speech played backwards: speech's spectrum and rhythm, no words in it
        pcm = (await speak(BABBLE_TEXT))[::-1]
        return audio.at_level(np.resize(pcm, int(duration * audio.RATE)), level)

    async def clip(text: str | None, wav: Any, ev: Event | None = None) -> np.ndarray:
        if wav is not None:
            pcm, _ = audio.read_wav(wav)
            return pcm
        if text is not None:
            return await say(text)
        assert ev is not None
        if ev.kind == "noise":
            return audio.noise_burst(ev.duration, ev.level)
        if ev.kind == "babble":
            return await babble(ev.duration, ev.level)
        return audio.click(ev.duration, ev.level)

    try:  # the TTS is closed whatever a clip does
        out: list[np.ndarray] = []
        for t in scenario.turns:
            out.append(await turn_clip(t))
            for ev in t.during_reply:
                out.append(await clip(ev.say, ev.wav, ev))
    finally:
        await user_tts.aclose()
    return Sounds(out, spoken)
