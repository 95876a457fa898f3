"""Built-in TTS `local`: offline speech synthesis with espeak-ng.

The library and its voice data come from the `espeakng-loader` wheel (no system packages);
it is driven through ctypes. Output is 22050 Hz mono int16.

Options (`[default.tts.local]`):
    voice = "en-us"   # espeak-ng voice or language code, optional variant ("en-gb", "en-us+f3")
    rate = 175        # speaking rate in words per minute (espeak-ng accepts 80-450)

`synthesize()` is also usable without livekit sessions: the simulator makes user audio with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handler.api import Register, Runtime, hookimpl

DEFAULT_VOICE = "en-us"
DEFAULT_RATE = 175
MIN_RATE, MAX_RATE = 80, 450  # espeak-ng silently clamps outside this range


@hookimpl(trylast=True)
def register_providers(register: Register) -> None:
    register(
        "tts",
        "local",
        _build,
        options=None,
        validate=_validate,
        preload=(f"{__package__}.engines.espeak_tts",),
    )


def _validate(options: Mapping[str, Any]) -> list[str]:
    problems = []
    voice = options.get("voice", DEFAULT_VOICE)
    if not isinstance(voice, str) or not voice.strip():
        problems.append("voice: must be a non-empty espeak-ng voice name or language code")
    rate = options.get("rate", DEFAULT_RATE)
    if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE:
        problems.append(f"rate: must be an integer from {MIN_RATE} to {MAX_RATE} (words per minute)")
    return problems


def _build(options: Mapping[str, Any], runtime: Runtime) -> Any:
    from .engines.espeak_tts import LocalTTS  # heavy: only when built

    if problems := _validate(options):
        raise ValueError("tts.local: " + "; ".join(problems))
    return LocalTTS(voice=options.get("voice", DEFAULT_VOICE), rate=options.get("rate", DEFAULT_RATE))
