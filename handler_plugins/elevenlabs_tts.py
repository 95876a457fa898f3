"""TTS `elevenlabs`: livekit's ElevenLabs plugin, streaming over the multi-stream websocket.

`first_phrase_words` (N > 0) starts each reply's audio from its first phrase (up to its first
clause break or N words) instead of its first full sentence (handler/pipeline/first_phrase.py)."""

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
        preload=("livekit.plugins.elevenlabs",),
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


_one_shot_prewarm_tts: Any = None


def _tts_class() -> Any:
    """livekit's ElevenLabs TTS whose pre-warm opens the websocket once, within the timeout. The
    plugin's own pre-warm retries a failing handshake forever (1, 2, 4 ... 30 s apart) next to the
    streams' own attempts, so a provider that is down saw more handshakes than MAX_RETRIES + 1 per
    request; a pre-warm is an optimisation, and the first stream connects anyway if it failed.
    Built on first use: livekit stays out of the configuration commands' imports."""
    global _one_shot_prewarm_tts
    if _one_shot_prewarm_tts is not None:
        return _one_shot_prewarm_tts
    import asyncio
    import logging

    from livekit.plugins import elevenlabs

    logger = logging.getLogger("handler.resilience")

    class OneShotPrewarmTTS(elevenlabs.TTS):
        prewarm_timeout: float = 15.0

        async def _run_prewarm(self) -> None:
            try:
                await asyncio.wait_for(self._current_connection(), self.prewarm_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the first stream connects (and retries) by itself
                logger.info("ElevenLabs pre-warm failed (one attempt): %s", type(e).__name__)

    _one_shot_prewarm_tts = OneShotPrewarmTTS
    return OneShotPrewarmTTS


def build(options: Mapping[str, Any], runtime: Any) -> Any:
    kwargs: dict[str, Any] = {}
    if options["base_url"]:
        kwargs["base_url"] = options["base_url"]
    if options["first_phrase_words"]:
        from handler.pipeline.first_phrase import FirstPhraseTokenizer

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
