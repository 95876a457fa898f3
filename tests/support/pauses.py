"""A user who pauses mid-sentence ("my order number is, um, ... four two seven"), as a simulate
scenario: both parts spoken by espeak-ng, a silent gap of exactly `gap` seconds between their
voiced sounds, written as one WAV turn, then a complete question. Used by the smart-turn tests
and `measurements/smart_turn.py`.

The filler matters: espeak-ng ends a bare "my order number is" with a sentence's falling pitch,
which an end-of-turn model that listens to prosody (Smart Turn v3) takes as finished; "um" at
the end is how speakers (and espeak) sound mid-sentence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from handler import audio

FIRST = "my order number is, um,"
REST = "four two seven"
QUESTION = "what time do you open tomorrow"
GAP = 1.5
"""The pause the conversation tests use, with the model options they pin (`HELD`)."""
HELD = {"turn.smart-turn.threshold": 0.5, "turn.smart-turn.max_endpointing_delay": 3.0}
"""Smart Turn options with margin on both sides for a test: the model scores "my order number is,
um," well under 0.5 (the shipped 0.1 sits close above its 0.01-0.06: fine for a preset, a coin toss
for a test on a busy machine, where the audio the model is given shifts with the wall clock), and a
3 s hold outlasts the 1.5 s pause plus the VAD's time to hear the user resume, twice over."""
HELD_ENV = {"HANDLER_" + key.upper().replace(".", "__"): str(value) for key, value in HELD.items()}
"""`HELD` as the environment variables a command (simulate, start) reads."""


def spoken(text: str, *, voice: str = "en-us", rate: int = 175) -> np.ndarray:
    """`text` as 16 kHz int16, without the silence espeak-ng puts around it."""
    from handler_plugins.engines.espeak_tts import synthesize

    pcm, _ = synthesize(text, voice=voice, rate=rate, sample_rate=audio.RATE)
    lead = round(audio.trailing_silence(pcm[::-1]) * audio.RATE)
    tail = round(audio.trailing_silence(pcm) * audio.RATE)
    return pcm[lead : pcm.size - tail]


def paused_utterance(gap: float, *, voice: str = "en-us", rate: int = 175, rest: str = REST) -> np.ndarray:
    silence = np.zeros(round(gap * audio.RATE), np.int16)
    return np.concatenate(
        [spoken(FIRST, voice=voice, rate=rate), silence, spoken(rest, voice=voice, rate=rate)]
    )


def write_scenario(
    directory: Path, gap: float, *, voice: str = "en-us", rate: int = 175, rest: str = REST
) -> Path:
    """`mid_sentence.toml` (and its WAV) in `directory`: the paused order number (ending in
    `rest`), then a complete question; returns the scenario's path."""
    wav = directory / "mid_sentence.wav"
    audio.write_wav(wav, paused_utterance(gap, voice=voice, rate=rate, rest=rest))
    path = directory / "mid_sentence.toml"
    words = " ".join(rest.replace(",", " ").replace(".", " ").split())  # the recognizer's words
    path.write_text(
        'name = "mid_sentence"\n'
        f'description = "A {gap} s pause mid-sentence, then a complete question."\n'
        f'user_voice = "{voice}"\n'
        # the recognizer hears the two parts as two VAD segments (or as one, when the turn is held)
        f'phrases = ["my order number is", "{words}", "my order number is {words}"]\n'
        f'[[turns]]\nwav = "{wav.name}"\n'
        f'[[turns]]\nsay = "{QUESTION}"\n'
    )
    return path
