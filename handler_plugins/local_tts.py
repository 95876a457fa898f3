"""Built-in TTS `local`: offline speech synthesis with espeak-ng.

The library and its voice data come from the `espeakng-loader` wheel (no system packages);
it is driven through ctypes. Output is 22050 Hz mono int16.

Options: `OPTIONS` below (`[tts.local]`, their defaults and why).

`synthesize()` is also usable without livekit sessions: the simulator makes user audio with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handler.api import Register, Runtime, hookimpl, table

MIN_RATE, MAX_RATE = 80, 450  # espeak-ng silently clamps outside this range


OPTIONS = """\
voice = "en-us"                        # espeak-ng voice (add +variant, e.g. "en-us+f3")
rate = 175                             # words per minute (80-450)
"""
"""`[tts.local]`: this provider's options, their defaults and why. The lowest layer of the table:
every settings file changes them; `config show` lists them, labelled with this plugin."""
DECLARED = table(OPTIONS)
DEFAULT_VOICE = DECLARED["options"]["voice"]
DEFAULT_RATE = DECLARED["options"]["rate"]


@hookimpl(trylast=True)
def register_providers(register: Register) -> None:
    register(
        "tts",
        "local",
        _build,
        **DECLARED,
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
