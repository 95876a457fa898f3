"""The caller's own clockwork, without a room."""

from __future__ import annotations

import time

import numpy as np
from livekit import rtc

from handler import audio
from handler.room.caller import late_silence
from handler.sim.io import SAMPLES, TICK


def frame(value: int) -> rtc.AudioFrame:
    return rtc.AudioFrame(np.full(SAMPLES, value, np.int16).tobytes(), audio.RATE, 1, SAMPLES)


def test_only_silence_that_is_late_is_dropped() -> None:
    now = 100.0
    assert late_silence(frame(0), now - 5 * TICK, now)  # a stall: dropped, the track catches up
    assert not late_silence(frame(0), now - TICK / 2, now)  # within a tick: sent
    assert not late_silence(frame(1000), now - 5 * TICK, now)  # speech is sent however late


async def test_the_microphone_sends_a_few_ticks_per_frame_and_drops_late_silence() -> None:
    from handler.room.caller import publish
    from handler.sim.io import Clock, ScriptedInput

    scripted = ScriptedInput(Clock())
    source = rtc.AudioSource(audio.RATE, 1, queue_size_ms=100)
    try:
        # The clock starts a minute ahead, so no tick is late however busy the machine (a
        # clock started now made tick 0 late when the source's creation took over 10 ms).
        scripted.clock.start = time.monotonic() + 60.0
        assert await publish(source, scripted, 4) == 4 * SAMPLES  # on time: every tick, one frame
        assert scripted.tick == 4
        scripted.clock.start = time.monotonic() - 60.0  # a stall: the next ticks are long overdue
        assert await publish(source, scripted, 4) == 0  # silence: dropped, the track catches up
        speech = np.full(4 * SAMPLES, 1000, np.int16)
        scripted.play_at(speech, scripted.tick)  # starts on the next VAD-window grid tick
        sent = 0
        while scripted.tick < 64:
            sent += await publish(source, scripted, 4)
        assert sent == 4 * SAMPLES  # speech is sent however late
        assert len(scripted.clock.user) == 64 * SAMPLES * 2  # every tick recorded, sent or not
    finally:
        await source.aclose()
