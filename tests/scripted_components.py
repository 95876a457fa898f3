"""Test inputs: a VAD and an STT whose events the test dictates, subclassing livekit's own base
classes (as livekit's tests do with their fake VAD/STT), so a real `AgentSession` can be driven
with explicit speech durations and transcripts instead of audio whose detection depends on
timing. They are registered as providers ("scripted") through a throwaway plugin, so the session
is built by the same `handler.pipeline.session.build_session` as everywhere."""

from __future__ import annotations

import asyncio
from typing import Any

from livekit.agents import stt, utils, vad
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import AudioBuffer

from handler.hookspecs import hookimpl
from handler.pipeline.turns import TurnRecord

STEP = 0.032
"""Seconds between two inferences, as silero's 512-sample windows at 16 kHz."""


class ScriptedVAD(vad.VAD):
    def __init__(self) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=STEP))
        self.streams: list[ScriptedVADStream] = []

    @property
    def model(self) -> str:
        return "scripted"

    @property
    def provider(self) -> str:
        return "test"

    def stream(self) -> ScriptedVADStream:
        stream = ScriptedVADStream(self)
        self.streams.append(stream)
        return stream

    async def utterance(self, speech: float, silence: float = 0.5) -> None:
        """The user speaks: START_OF_SPEECH, then one inference per STEP whose speech_duration
        grows to `speech` and keeps growing through the `silence` that ends it (as silero counts),
        then END_OF_SPEECH. Real time, as the real VAD reports."""
        live = [s for s in self.streams if not s._event_ch.closed]
        elapsed, heard = 0.0, 0.0
        for s in live:
            s.send(vad.VADEventType.START_OF_SPEECH, speech=0.0, silence=0.0, speaking=True)
        while elapsed < speech + silence:
            await asyncio.sleep(STEP)
            elapsed += STEP
            quiet = max(0.0, elapsed - speech)
            heard = elapsed
            for s in live:
                s.send(
                    vad.VADEventType.INFERENCE_DONE,
                    speech=heard,
                    silence=quiet,
                    speaking=True,
                    raw_silence=quiet,
                )
        for s in live:
            s.send(vad.VADEventType.END_OF_SPEECH, speech=heard, silence=silence, speaking=False)


class ScriptedVADStream(vad.VADStream):
    def __init__(self, owner: ScriptedVAD) -> None:
        super().__init__(owner)
        self._index = 0

    async def _main_task(self) -> None:
        async for _ in self._input_ch:  # the audio itself decides nothing here
            pass

    def send(
        self,
        kind: vad.VADEventType,
        *,
        speech: float,
        silence: float,
        speaking: bool,
        raw_silence: float = 0.0,
    ) -> None:
        if self._event_ch.closed:
            return
        self._index += 512
        self._event_ch.send_nowait(
            vad.VADEvent(
                type=kind,
                samples_index=self._index,
                timestamp=self._index / 16000,
                speech_duration=speech,
                silence_duration=silence,
                speaking=speaking,
                probability=1.0 if speaking else 0.0,
                raw_accumulated_silence=raw_silence,
                raw_accumulated_speech=speech,
            )
        )


class ScriptedSTT(stt.STT):
    """A streaming recognizer that says what the test tells it to (`say`)."""

    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=False))
        self.streams: list[ScriptedSTTStream] = []

    @property
    def model(self) -> str:
        return "scripted"

    @property
    def provider(self) -> str:
        return "test"

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        raise NotImplementedError("streaming only")

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> ScriptedSTTStream:
        s = ScriptedSTTStream(stt=self, conn_options=conn_options)
        self.streams.append(s)
        return s

    def say(self, text: str) -> None:
        """A final transcript now (empty text: the recognizer heard no words)."""
        for s in self.streams:
            if not s._event_ch.closed:
                s._event_ch.send_nowait(
                    stt.SpeechEvent(
                        type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                        request_id=utils.shortuuid(),
                        alternatives=[stt.SpeechData(language="en", text=text)],
                    )
                )


class ScriptedSTTStream(stt.RecognizeStream):
    async def _run(self) -> None:
        async for _ in self._input_ch:
            pass


class Scripted:
    """The throwaway plugin: the scripted VAD and STT as providers, and an observer of the turn
    tracker's hook."""

    def __init__(self) -> None:
        self.vad = ScriptedVAD()
        self.stt = ScriptedSTT()
        self.records: list[TurnRecord] = []
        self.summaries: list[Any] = []

    @hookimpl
    def register_providers(self, register: Any) -> None:
        register("vad", "scripted", lambda options, runtime: self.vad, options={})
        register("stt", "scripted", lambda options, runtime: self.stt, options={})

    @hookimpl
    def turn_completed(self, record: TurnRecord, info: Any) -> None:
        self.records.append(record)

    @hookimpl
    def session_summary(self, summary: Any, info: Any) -> None:
        self.summaries.append(summary)
