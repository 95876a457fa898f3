"""espeak-ng synthesis (espeakng-loader, through ctypes) behind livekit's TTS interface:
the `local` TTS's engine."""

from __future__ import annotations

import _ctypes
import asyncio
import contextlib
import ctypes
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import espeakng_loader
import numpy as np
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, tts, utils

from handler.api import resample

DEFAULT_VOICE = "en-us"
"""espeak-ng's American English voice: the engine's default when used on its own (the `local`
provider passes its configured `voice`)."""
DEFAULT_RATE = 175
"""espeak-ng's own default speaking rate, words per minute."""

# espeak-ng's C API constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_Synth returns only once the callback got all the audio
_INITIALIZE_DONT_EXIT = 0x8000  # report bad data instead of calling exit() in our process
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _VoiceSpec(ctypes.Structure):  # espeak_VOICE
    _fields_ = [
        ("name", ctypes.c_char_p), ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p), ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte), ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]  # fmt: skip


class _Espeak:
    """The process's espeak-ng, one synthesis at a time.

    espeak-ng keeps synthesis state in the library's static variables (the pitch flutter's
    position, the wave generator's phase and echo buffer) that no API call resets, so the same text
    in the same voice came out different after anything else had been said: a few samples longer
    or shorter, a pitch contour shifted. For a simulator that must feed the VAD the same samples on
    every run that is not acceptable (half of those variants of one fast "thanks bye" went unheard
    by the VAD at some window phase, the others at none). So each synthesis loads the library
    afresh, initializes it, speaks and unloads it: the output depends on the text, voice and rate
    alone, for about 3 ms more per synthesis.
    """

    def __init__(self) -> None:
        self._path = espeakng_loader.get_library_path()
        # the path is the directory that contains `espeak-ng-data`
        self._data = str(Path(espeakng_loader.get_data_path()).parent).encode()
        self._lock = threading.Lock()
        self._chunks: list[bytes] = []
        # keep a reference: espeak keeps only the raw function pointer
        self._callback = _SynthCallback(self._on_audio)
        with self._library() as (_, rate):
            self.sample_rate: int = rate

    @contextlib.contextmanager
    def _library(self) -> Iterator[tuple[Any, int]]:
        """espeak-ng freshly loaded and initialized, and its sample rate; unloaded on exit."""
        lib = ctypes.CDLL(self._path)
        try:
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_VoiceSpec)]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_Synth.argtypes = [
                ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
            ]  # fmt: skip
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data, _INITIALIZE_DONT_EXIT)
            if rate <= 0:
                raise RuntimeError(f"espeak-ng failed to initialize (data in {self._data!r})")
            lib.espeak_SetSynthCallback(self._callback)
            yield lib, rate
        finally:
            lib.espeak_Terminate()
            _ctypes.dlclose(lib._handle)

    def _on_audio(self, wav: Any, num_samples: int, _events: Any) -> int:
        if num_samples > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, num_samples * 2))
        return 0  # 0 = continue

    @staticmethod
    def _set_voice(lib: Any, voice: str) -> None:
        # by name or file ("en-us", "en-us+f3"), else by language code ("en-gb" is only a
        # language of the voice file "en"), which is how the espeak-ng command line resolves -v
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            spec = _VoiceSpec(languages=voice.lower().encode())
            if lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) != 0:
                raise ValueError(f"espeak-ng has no voice or language {voice!r}")

    def check_voice(self, voice: str) -> None:
        with self._lock, self._library() as (lib, _):
            self._set_voice(lib, voice)

    def synthesize(self, text: str, voice: str, rate: int) -> np.ndarray:
        data = text.encode() + b"\0"
        with self._lock, self._library() as (lib, _):
            self._set_voice(lib, voice)
            lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
            self._chunks = []
            err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            pcm, self._chunks = b"".join(self._chunks), []
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with error {err}")
        return np.frombuffer(pcm, dtype=np.int16)


_engine_lock = threading.Lock()
_engine_instance: _Espeak | None = None


def _engine() -> _Espeak:
    global _engine_instance
    with _engine_lock:  # one lock for the library, whose state is global
        if _engine_instance is None:
            _engine_instance = _Espeak()
        return _engine_instance


def synthesize(
    text: str,
    *,
    voice: str = DEFAULT_VOICE,
    rate: int = DEFAULT_RATE,
    sample_rate: int | None = None,
) -> tuple[np.ndarray, int]:
    """Speak `text`; returns (mono int16 samples, sample rate), resampled if `sample_rate` given.

    Blocking (a few ms per sentence); call it through `asyncio.to_thread` from async code.
    """
    engine = _engine()
    pcm = engine.synthesize(text, voice, rate)
    if sample_rate is None or sample_rate == engine.sample_rate:
        return pcm, engine.sample_rate
    return resample(pcm, engine.sample_rate, sample_rate), sample_rate


class LocalTTS(tts.TTS):
    def __init__(self, *, voice: str = DEFAULT_VOICE, rate: int = DEFAULT_RATE) -> None:
        engine = _engine()
        engine.check_voice(voice)  # a typo in the voice fails at startup, not at the first reply
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=engine.sample_rate,
            num_channels=1,
        )
        self._voice = voice
        self._rate = rate

    @property
    def model(self) -> str:
        return f"espeak-ng/{self._voice}"

    @property
    def provider(self) -> str:
        return "local"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _ChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class _ChunkedStream(tts.ChunkedStream):
    _tts: LocalTTS

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=self._tts.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        pcm = await asyncio.to_thread(
            _engine().synthesize, self.input_text, self._tts._voice, self._tts._rate
        )
        if pcm.size == 0:
            # Should espeak find nothing to say: ChunkedStream treats a non-empty text without
            # audio as a retryable provider error, so send a moment of silence instead.
            pcm = np.zeros(self._tts.sample_rate // 50, dtype=np.int16)
        output_emitter.push(pcm.tobytes())
