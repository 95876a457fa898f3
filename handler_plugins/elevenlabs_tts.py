"""TTS `elevenlabs`: livekit's ElevenLabs plugin, streaming over the multi-stream websocket.

`first_phrase_words` (N > 0) starts each reply's audio from its first phrase (up to its first
clause break or N words) instead of its first full sentence (handler/pipeline/first_phrase.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handler.api import Register, Runtime, hookimpl, table

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


OPTIONS = """\
voice_id = "u0TsaWvt0v8migutHM3M"      # ElevenLabs voice
model = "eleven_turbo_v2_5"            # ElevenLabs model
encoding = "pcm_22050"                 # output encoding: raw PCM avoids an mp3 decode
base_url = ""                          # API base URL; empty = ElevenLabs' own
first_phrase_words = 5                 # first audio from the reply's first phrase: up to its first
                                       # comma/clause end or N words (0 = first full sentence, livekit's way)
"""
"""`[tts.elevenlabs]`: this provider's options, their defaults and why. The lowest layer of the table:
every settings file changes them; `config show` lists them, labelled with this plugin."""


@hookimpl(trylast=True)
def register_providers(register: Register):
    register(
        "tts",
        "elevenlabs",
        build,
        secrets=("ELEVEN_API_KEY",),
        endpoints=lambda o: [o["base_url"] or DEFAULT_URL],
        validate=_validate,
        preload=("livekit.plugins.elevenlabs",),
        **table(OPTIONS),
    )


MAX_FIRST_PHRASE_WORDS = 50


def _validate(options: Mapping[str, Any]) -> list[str]:
    errors = []
    if options["encoding"] not in ENCODINGS:
        errors.append(f"encoding: must be one of {', '.join(ENCODINGS)}")
    words = options["first_phrase_words"]
    if isinstance(words, bool) or not isinstance(words, int) or not 0 <= words <= MAX_FIRST_PHRASE_WORDS:
        errors.append(
            f"first_phrase_words: must be a whole number from 0 (the first full sentence) to "
            f"{MAX_FIRST_PHRASE_WORDS}"
        )
    return errors


def _tts_class() -> Any:
    """livekit's ElevenLabs TTS whose pre-warm opens the websocket once, within the timeout, instead
    of retrying a failing handshake forever beside the streams' own attempts
    (handler/livekit_compat.py). Built on first use: livekit stays out of the configuration
    commands' imports."""
    from handler.api import livekit_compat

    return livekit_compat.elevenlabs_one_shot_prewarm_tts()


def build(options: Mapping[str, Any], runtime: Runtime) -> Any:
    kwargs: dict[str, Any] = {}
    if options["base_url"]:
        kwargs["base_url"] = options["base_url"]
    if options["first_phrase_words"]:
        from handler.api import FirstPhraseTokenizer

        # the plugin's own tokenizer (blingfire sentences, each flushed: auto_mode) behind the
        # first phrase; a SentenceTokenizer keeps auto_mode on
        kwargs["word_tokenizer"] = FirstPhraseTokenizer(options["first_phrase_words"])
    tts = _tts_class()(
        voice_id=options["voice_id"],
        model=options["model"],
        encoding=options["encoding"],
        api_key=runtime.secret("ELEVEN_API_KEY"),
        http_session=runtime.http_session,
        **kwargs,
    )
    tts.prewarm_timeout = runtime.settings.get("http.timeout")
    return tts
