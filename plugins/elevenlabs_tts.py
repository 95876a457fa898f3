"""TTS `elevenlabs`: livekit's ElevenLabs plugin, streaming over the multi-stream websocket."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handler.hookspecs import hookimpl

DEFAULT_URL = "https://api.elevenlabs.io/v1"
ENCODINGS = (
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_44100",
    "mp3_22050_32",
    "mp3_44100_32",
    "mp3_44100_64",
    "mp3_44100_96",
    "mp3_44100_128",
    "mp3_44100_192",
)


@hookimpl(trylast=True)
def register_providers(register):
    register(
        "tts",
        "elevenlabs",
        build,
        secrets=("ELEVEN_API_KEY",),
        endpoints=lambda o: [o["base_url"] or DEFAULT_URL],
        validate=_validate,
    )


def _validate(options: Mapping[str, Any]) -> list[str]:
    if options["encoding"] not in ENCODINGS:
        return [f"encoding: must be one of {', '.join(ENCODINGS)}"]
    return []


def build(options: Mapping[str, Any], runtime: Any) -> Any:
    from livekit.plugins import elevenlabs

    kwargs: dict[str, Any] = {}
    if options["base_url"]:
        kwargs["base_url"] = options["base_url"]
    return elevenlabs.TTS(
        voice_id=options["voice_id"],
        model=options["model"],
        encoding=options["encoding"],
        api_key=runtime.secret("ELEVEN_API_KEY"),
        http_session=runtime.http_session,
        **kwargs,
    )
