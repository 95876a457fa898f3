"""Smart Turn v3 (pipecat's end-of-turn model) run in this process, behind livekit 1.8's streaming
turn-detector protocol (`livekit.agents.voice.turn._StreamingTurnDetector`): the `smart-turn`
turn-detection provider's engine.

The model listens to the user's last 8 s of audio and says how likely they have finished
(a Whisper-style encoder with a one-unit head, int8, 8 MB). livekit asks for a prediction after
200 ms of silence (`predict()`); when the probability is below the threshold the turn is held
open up to `max_endpointing_delay` instead of `min_endpointing_delay`, so "my order number is ..."
is not answered in the pause.

The ONNX file and the numpy feature extractor come from the installed `pipecat-ai` wheel, read
as files: importing the `pipecat` package would log a banner through loguru and, on Python 3.11,
replace `asyncio.wait_for` process-wide with wait_for2's (pipecat/__init__.py). Neither touches
the worker; only numpy and onnxruntime (our own dependencies) run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions
from livekit.agents.language import LanguageCode
from livekit.agents.voice.turn import TurnDetectionEvent

from handler.api import EOT_INFERENCE, record_timing, timings
from handler_plugins.engines.smart_turn_files import FEATURES, MODEL, SHA256, model_files, read_verified

logger = logging.getLogger("handler.smart_turn")

SAMPLE_RATE = 16000
WINDOW = 8 * SAMPLE_RATE
"""The model hears the last 8 s (shorter audio is zero-padded in front, as in training)."""
PREDICTION_TIMEOUT = 1.0
"""s livekit waits for a prediction before it commits on `min_endpointing_delay` without one
(a prediction takes 40-140 ms here, `bench` and `measurements/smart_turn.py`; the rest is headroom
for a busy machine)."""
LANGUAGES = frozenset(
    {"ar", "bn", "zh", "da", "nl", "de", "en", "fi", "fr", "hi", "id", "it", "ja", "ko", "mr", "no", "nb"}
    | {"pl", "pt", "ru", "es", "tr", "uk", "vi"}
)
"""Smart Turn v3's 23 languages (ISO 639-1; Norwegian as "no" and "nb")."""

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smart-turn")
"""Predictions of every session in this process run here, one at a time: inference stays off the
event loop and the model's CPU use stays at `threads` cores whatever the number of sessions."""


def inference_times() -> list[float]:
    """This process's prediction times in seconds (features + model), oldest first: what `bench`
    reports as the model's own inference time."""
    return timings(EOT_INFERENCE)


def bound_blas_threads() -> None:
    """numpy's OpenBLAS runs the feature extractor's mel projection (an 80x201 by 201x801 matrix
    product) on as many threads as there are cores, and its idle worker spins for a while after
    each product, taking the core the ONNX thread needs next. On this 2-core machine under load
    that doubled a prediction (`python measurements/smart_turn.py inference`: blas threads 2 against
    1); one BLAS thread for the job process keeps a prediction on the `threads` ONNX asked for.
    Process-wide on purpose: a job process has no BLAS work that is worth a second core."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


class SmartTurnModel:
    """The ONNX session and the feature extractor; `probability()` is synchronous and CPU-bound."""

    def __init__(self, onnx: Path, features: Path, *, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # bounded like the silero VAD's session: one sequential thread pool of `threads`,
        # no busy-waiting threads spinning between predictions
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.name = onnx.stem  # "smart-turn-v3.2-cpu"
        # the bytes whose SHA-256 was checked are the ones loaded and run (not the path, read again)
        model = read_verified(onnx, SHA256[MODEL])
        self.session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        extractor = _load_module(features, read_verified(features, SHA256[FEATURES]))
        self._features = extractor.compute_whisper_log_mel_features

    def probability(self, pcm: np.ndarray) -> float:
        """How likely the speaker has finished, from 16 kHz mono int16 (or float in -1..1)."""
        return self.run(self.features(pcm))

    def features(self, pcm: np.ndarray) -> np.ndarray:
        """The last 8 s as the model's input: Whisper log-mel features, (1, 80, 800)."""
        audio = pcm.astype(np.float32)
        if pcm.dtype == np.int16:
            audio /= 32768.0
        audio = audio[-WINDOW:]
        audio = np.pad(audio, (WINDOW - audio.size, 0))  # silence before the turn, as in training
        return self._features(audio, do_normalize=True)[np.newaxis]

    def run(self, features: np.ndarray) -> float:
        (out,) = self.session.run(None, {"input_features": features})
        return float(np.asarray(out).reshape(-1)[0])  # the model ends in a sigmoid


def _load_module(path: Path, source: bytes) -> ModuleType:
    """Run one numpy-only module of the wheel from its checked source, outside the `pipecat`
    package."""
    module = ModuleType("_voice_handler_smart_turn_features")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - the reviewed file, by SHA-256
    return module


@functools.cache
def load(threads: int = 1) -> SmartTurnModel:
    """The process's one model (livekit's prewarm loads it before the first job)."""
    found = model_files()
    if isinstance(found, str):
        raise RuntimeError(found)  # validation reports this before anything starts
    t0 = time.perf_counter()
    bound_blas_threads()
    model = SmartTurnModel(*found, threads=threads)
    logger.info(
        "smart-turn model %s loaded in %.0f ms (%d thread%s)",
        model.name,
        (time.perf_counter() - t0) * 1000,
        threads,
        "" if threads == 1 else "s",
    )
    return model


class SmartTurnDetector:
    """What `AgentSession(turn_handling={"turn_detection": ...})` takes: one per process (it
    holds no per-call state), a stream per session."""

    def __init__(self, model: SmartTurnModel, *, threshold: float) -> None:
        self._model = model
        self.threshold = threshold

    @property
    def model(self) -> str:
        return self._model.name

    @property
    def provider(self) -> str:
        return "pipecat"

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> SmartTurnStream:
        return SmartTurnStream(self)


class SmartTurnStream:
    """One session's audio (the last 8 s, at 16 kHz) and its one prediction in flight."""

    def __init__(self, detector: SmartTurnDetector) -> None:
        self._detector = detector
        self._ring = np.zeros(WINDOW, dtype=np.int16)
        self._end = 0  # where the next sample goes
        self._filled = 0
        self._resampler: rtc.AudioResampler | None = None
        self._input_rate: int | None = None
        self._pending: asyncio.Future[TurnDetectionEvent] | None = None
        self._closed = False

    # the protocol's read-only properties -------------------------------------------------

    @property
    def model(self) -> str:
        return self._detector.model

    @property
    def provider(self) -> str:
        return self._detector.provider

    @property
    def is_fallback(self) -> bool:
        return False

    @property
    def prediction_timeout(self) -> float:
        return PREDICTION_TIMEOUT

    async def unlikely_threshold(self, language: LanguageCode | None) -> float | None:
        return self._detector.threshold

    async def backchannel_threshold(self, language: LanguageCode | None) -> float | None:
        return None  # the model has no backchannel output

    async def supports_language(self, language: LanguageCode | None) -> bool:
        # unknown (a recognizer that reports none) counts as supported: most calls are in one
        # of its languages; an unsupported one falls back to the endpointing delay alone
        return language is None or LanguageCode(language).language in LANGUAGES

    # audio in ---------------------------------------------------------------------------

    def push_audio(self, frame: rtc.AudioFrame) -> None:
        """Every input frame, on the event loop: a copy into the ring buffer, nothing more."""
        if self._closed:
            return
        for f in self._at_model_rate(frame):
            pcm = np.frombuffer(f.data, dtype=np.int16)
            if f.num_channels > 1:
                pcm = pcm.reshape(-1, f.num_channels).mean(axis=1).astype(np.int16)
            self._write(pcm)

    def _at_model_rate(self, frame: rtc.AudioFrame) -> list[rtc.AudioFrame]:
        if frame.sample_rate == SAMPLE_RATE:
            return [frame]
        if self._resampler is None or self._input_rate != frame.sample_rate:
            self._input_rate = frame.sample_rate
            self._resampler = rtc.AudioResampler(
                input_rate=frame.sample_rate, output_rate=SAMPLE_RATE, num_channels=frame.num_channels
            )
        return self._resampler.push(frame)

    def _write(self, pcm: np.ndarray) -> None:
        pcm = pcm[-WINDOW:]
        n = pcm.size
        first = min(n, WINDOW - self._end)
        self._ring[self._end : self._end + first] = pcm[:first]
        self._ring[: n - first] = pcm[first:]
        self._end = (self._end + n) % WINDOW
        self._filled = min(WINDOW, self._filled + n)

    def _snapshot(self) -> np.ndarray:
        if self._filled < WINDOW:  # not wrapped yet: writing starts at 0 (new stream, flush)
            return self._ring[: self._filled].copy()
        return np.concatenate((self._ring[self._end :], self._ring[: self._end]))

    # predictions ------------------------------------------------------------------------

    def predict(self) -> asyncio.Future[TurnDetectionEvent]:
        """Start a prediction on the audio so far (superseding any in flight) and return its
        future; the model runs on the process's smart-turn thread."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[TurnDetectionEvent] = loop.create_future()
        if self._closed:
            fut.set_result(_event(1.0))  # nothing to listen to: let the endpointing delay decide
            return fut
        self.cancel_inference()
        self._pending = fut
        asked = time.time()
        job = loop.run_in_executor(_executor, self._timed, self._snapshot())
        job.add_done_callback(lambda done: self._resolve(fut, done, asked))
        return fut

    def _timed(self, pcm: np.ndarray) -> tuple[float, float]:
        t0 = time.perf_counter()
        probability = self._detector._model.probability(pcm)
        took = time.perf_counter() - t0
        record_timing(EOT_INFERENCE, took)
        return probability, took

    def _resolve(
        self, fut: asyncio.Future[TurnDetectionEvent], job: asyncio.Future[Any], asked: float
    ) -> None:
        if self._pending is fut:
            self._pending = None
        if fut.done():  # superseded or cancelled meanwhile: livekit no longer waits for it
            return
        if job.cancelled() or job.exception() is not None:
            # a failed prediction must not hold the turn open: commit on the endpointing delay
            why = "cancelled" if job.cancelled() else job.exception()
            logger.warning("smart-turn prediction failed: %s", why)
            fut.set_result(_event(1.0))
            return
        probability, took = job.result()
        fut.set_result(_event(probability, inference=took, delay=time.time() - asked))

    def cancel_inference(self, *, timed_out: bool = False) -> None:
        """New speech or a turn boundary: the prediction in flight no longer matters. Its waiter
        (if any) hears "not finished", as livekit's own detectors say for a cancelled request."""
        fut, self._pending = self._pending, None
        if fut is not None and not fut.done():
            fut.set_result(_event(0.0))

    def flush(self, reason: str | None = None) -> None:
        """The turn is over (committed or cleared): the next prediction hears only what follows."""
        self._end = self._filled = 0
        self.cancel_inference()

    def end_input(self) -> None:
        self.flush()
        self._closed = True

    async def aclose(self) -> None:
        self.end_input()


def _event(
    probability: float, *, inference: float | None = None, delay: float | None = None
) -> TurnDetectionEvent:
    return TurnDetectionEvent(
        type="eot_prediction",
        end_of_turn_probability=probability,
        last_speaking_time=time.time(),
        inference_duration=inference,
        detection_delay=delay,
    )
