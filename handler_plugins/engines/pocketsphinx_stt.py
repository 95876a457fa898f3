"""pocketsphinx recognition behind livekit's STT interface (the `local` STT's engine)."""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import threading
from pathlib import Path

import numpy as np
import pocketsphinx
from livekit.agents import NOT_GIVEN, APIConnectOptions, LanguageCode, NotGivenOr, stt, utils
from pocketsphinx.lm import ArpaBoLM

from handler.api import FILLERS, frames_to_mono, resample, without_fillers

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # the bundled acoustic model's rate
# Quiet context around the audio and a faint noise floor (about -66 dBFS). The MFCC front end
# takes log energies: digitally silent samples (synthetic speech, zero-filled frames) yield
# degenerate frames that derail the silence model, and words at the very edge of a buffer
# get dropped. Measured on espeak speech with a domain model: WER 0.42 without, 0.02 with.
_EDGE_PAD_S = 0.2
_NOISE_RMS = 16.0
# Every domain model also has each filler as a sentence of its own, each a quarter as frequent
# as a phrase. Without them, a filler-like sound must start one of the phrases: an espeak
# "uh huh" (though "uh huh" itself was a phrase) came out as "tell" on about 1 VAD alignment in
# 4, which the session takes for a turn. With them it decodes as "uh" on every alignment tried,
# and at 4:1 the bundled scenarios' recognition is unchanged (at 1:1, "time" became "do" more
# often). Measured on espeak voices with 2 to 4 phrases.
_PHRASE_WEIGHT = 4


def _words(text: str) -> list[str]:
    """Lower-case words as spelled in cmudict (apostrophes kept: "what's", "i'd")."""
    return [w.strip("'") for w in re.findall(r"[\w']+", text.lower()) if w.strip("'")]


class _Recognizer:
    """One pocketsphinx decoder plus the lock that serializes it (decoders are not thread-safe)."""

    def __init__(self, phrases: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        domain = self._domain_decoder(phrases) if phrases else None
        # else the general model (~0.5 s to load)
        self._decoder = domain if domain is not None else pocketsphinx.Decoder(loglevel="ERROR")

    @staticmethod
    def _domain_decoder(phrases: tuple[str, ...]) -> pocketsphinx.Decoder | None:
        sentences = [_words(p) for p in phrases]
        vocab = {w for s in sentences for w in s}
        # A dictionary holding only the model's words: the decoder builds its search over the
        # whole dictionary, which takes ~3 s with the full cmudict and ~20 ms with this.
        entries: list[str] = []
        wanted = vocab | FILLERS
        with open(pocketsphinx.get_model_path("en-us/cmudict-en-us.dict")) as f:
            for line in f:  # "word phones" and "word(2) phones" for alternate pronunciations
                if line.split(" ", 1)[0].split("(", 1)[0] in wanted:
                    entries.append(line)
        known = {line.split(" ", 1)[0].split("(", 1)[0] for line in entries}
        if unknown := sorted(vocab - known):
            logger.warning("stt.local: words not in the pocketsphinx dictionary, ignored: %s",
                           ", ".join(unknown))  # fmt: skip
        if not vocab & known:
            logger.warning("stt.local: no usable phrase words, using the general en-us model")
            return None
        sentences = sentences * _PHRASE_WEIGHT + [[f] for f in sorted(FILLERS & known)]
        # add_start: sentence boundaries <s> </s> in the n-grams, as pocketsphinx expects
        lines = (" ".join(w for w in s if w in known) for s in sentences)
        lm = ArpaBoLM(text="\n".join(line for line in lines if line), add_start=True)
        lm.compute()
        with tempfile.TemporaryDirectory(prefix="stt-local-") as tmp:
            lm_path, dict_path = Path(tmp, "domain.arpa"), Path(tmp, "domain.dict")
            with open(lm_path, "w") as f:
                lm.write(f)
            dict_path.write_text("".join(entries))
            return pocketsphinx.Decoder(lm=str(lm_path), dict=str(dict_path), loglevel="ERROR")

    def decode(self, pcm: np.ndarray) -> str:
        """Transcribe one utterance of 16 kHz mono int16 samples (blocking)."""
        pad = np.zeros(int(_EDGE_PAD_S * SAMPLE_RATE))
        # a fixed seed per call: the same audio always gives the same transcript
        noise = np.random.default_rng(0).normal(0.0, _NOISE_RMS, pcm.size + 2 * pad.size)
        audio = np.concatenate([pad, pcm, pad]) + noise
        data = np.clip(np.round(audio), -32768, 32767).astype(np.int16).tobytes()
        with self._lock:
            self._decoder.start_utt()
            self._decoder.process_raw(data, full_utt=True)
            self._decoder.end_utt()
            hyp = self._decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""


_recognizers: dict[tuple[str, ...], _Recognizer] = {}
_recognizers_lock = threading.Lock()


def _recognizer(phrases: tuple[str, ...]) -> _Recognizer:
    """The decoder for a phrase set, loaded once per process (the lock keeps a prewarm and a
    first utterance from loading the same model twice)."""
    with _recognizers_lock:
        if phrases not in _recognizers:
            _recognizers[phrases] = _Recognizer(phrases)
        return _recognizers[phrases]


class LocalSTT(stt.STT):
    def __init__(self, *, phrases: tuple[str, ...] = (), drop_fillers: bool = True) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._phrases = tuple(phrases)
        self._drop_fillers = drop_fillers

    @property
    def model(self) -> str:
        return "pocketsphinx/en-us" + ("+domain-lm" if self._phrases else "")

    @property
    def provider(self) -> str:
        return "local"

    def prewarm(self) -> None:
        # Called on the event loop when the agent starts: load the model (up to ~0.5 s) in a
        # thread so it is ready for the first utterance without stalling the loop.
        threading.Thread(
            target=_recognizer, args=(self._phrases,), name="stt-local-prewarm", daemon=True
        ).start()

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,  # English only: the bundled model is en-us
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        pcm, rate = frames_to_mono(buffer)
        text = ""
        if pcm.size:

            def work() -> str:  # resampling and decoding are CPU-bound: keep the loop free
                return _recognizer(self._phrases).decode(resample(pcm, rate, SAMPLE_RATE))

            text = await asyncio.to_thread(work)
            if self._drop_fillers:
                # like cloud recognizers' default: "uh", "hmm", "uh-huh" carry no words, so an
                # utterance of only fillers comes back empty (and cannot take a turn)
                text = without_fillers(text)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=utils.shortuuid(),
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text.lower())],
        )
