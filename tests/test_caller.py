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
    now = time.monotonic()
    assert late_silence(frame(0), now - 5 * TICK)  # a stall: dropped, the track catches up
    assert not late_silence(frame(0), now + TICK)  # on time: sent
    assert not late_silence(frame(1000), now - 5 * TICK)  # speech is sent however late
