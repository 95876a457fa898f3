"""The simulated room's two ends: the user's microphone and the agent's speaker, on one clock.

Both run on 10 ms ticks counted from the start of the conversation. The input sends one frame
per tick and the sink plays one tick of audio per tick, so tick `n` of the input and tick `n` of
the sink are the same moment of the conversation. Clips are scheduled on the input's own sample
timeline (`ScriptedInput.play_at(pcm, tick)`): a sound placed "0.5 s after the agent started
speaking" enters at the sink's start tick + 50, sample-exact, whatever the machine's load does to
wall-clock timing. When the loop runs late, both ends catch up tick by tick instead of skipping,
so the VAD is fed the same samples on every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass

import numpy as np
from livekit import rtc
from livekit.agents.voice import io

from handler import audio

TICK = 0.01
SAMPLES = int(audio.RATE * TICK)


VAD_WINDOW = 512
"""Samples per inference window of the silero VAD at 16 kHz."""
GRID = VAD_WINDOW // math.gcd(VAD_WINDOW, SAMPLES)
"""Ticks between two starts that fall at the same place in the VAD's windows (16 ticks: 160 ms)."""


def ticks(seconds: float) -> int:
    """Whole ticks in `seconds` (rounded)."""
    return round(seconds / TICK)


def on_grid(tick: int) -> int:
    """The first tick from `tick` on whose first sample starts a VAD window (counting windows from
    the input's first sample). Every clip starts on this grid, so each clip meets the VAD's windows
    at the same phase on every run: the VAD, and the recognizer behind the segments it cuts, get
    the same samples whatever the wall-clock scheduling did."""
    return -(-tick // GRID) * GRID


class Clock:
    """Shared 10 ms ticks since the start of the conversation; both tracks are recorded at the
    tick's position, so the WAVs line up."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.wall_start = time.time()
        self.user = bytearray()
        self.agent = bytearray()

    async def wait_tick(self, n: int) -> None:
        delay = self.start + n * TICK - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def wall(self, n: int) -> float:
        """The wall time (epoch s) tick `n` stands for."""
        return self.wall_start + n * TICK

    @staticmethod
    def record(track: bytearray, n: int, chunk: bytes) -> None:
        pos = n * SAMPLES * 2
        if len(track) < pos:
            track.extend(bytes(pos - len(track)))
        track[pos : pos + len(chunk)] = chunk


@dataclass
class _Scheduled:
    start: int
    """First tick of the clip on the input's timeline."""
    pcm: np.ndarray
    done: asyncio.Future[int]
    """Resolves to the tick after the clip's last sample."""

    @property
    def end(self) -> int:
        return self.start + -(-len(self.pcm) // SAMPLES)


class ScriptedInput(io.AudioInput):
    """Silence, except where clips are scheduled; one frame per tick. Overlapping clips mix."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(label="simulated-user")
        self.clock = clock
        self.tick = 0
        """The next tick this input will send."""
        self._clips: list[_Scheduled] = []

    def play_at(self, pcm: np.ndarray, tick: int) -> asyncio.Future[int]:
        """Schedule a clip to start at `tick`, moved onto the VAD-window grid (`on_grid`: at most
        150 ms later), or at the next grid tick if that one has already been sent. The future
        resolves to the tick after its last sample."""
        clip = _Scheduled(on_grid(max(tick, self.tick)), pcm, asyncio.get_running_loop().create_future())
        self._clips.append(clip)
        return clip.done

    def play(self, pcm: np.ndarray) -> asyncio.Future[int]:
        """Play a clip from the next tick on."""
        return self.play_at(pcm, self.tick)

    def _chunk(self, n: int) -> np.ndarray:
        mix = np.zeros(SAMPLES, np.int32)
        for clip in self._clips:
            if clip.start <= n < clip.end:
                offset = (n - clip.start) * SAMPLES
                part = clip.pcm[offset : offset + SAMPLES]
                mix[: len(part)] += part
        for clip in [c for c in self._clips if c.end <= n + 1]:
            self._clips.remove(clip)
            if not clip.done.done():
                clip.done.set_result(clip.end)
        return np.clip(mix, -32768, 32767).astype(np.int16)

    async def __anext__(self) -> rtc.AudioFrame:
        await self.clock.wait_tick(self.tick)
        return self.take()

    def take(self) -> rtc.AudioFrame:
        """The next tick's frame now, without waiting for its time (a publisher that sends a few
        ticks ahead into a source that paces them)."""
        data = self._chunk(self.tick).tobytes()
        Clock.record(self.clock.user, self.tick, data)
        self.tick += 1
        return rtc.AudioFrame(data, audio.RATE, 1, SAMPLES)


@dataclass(frozen=True)
class PlayStart:
    tick: int
    wall: float


class RealtimeSink(io.AudioOutput):
    """Plays the agent's audio in real time on the clock; pause holds it, clear drops it."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(
            label="simulated-speaker",
            next_in_chain=None,
            sample_rate=audio.RATE,
            capabilities=io.AudioOutputCapabilities(pause=True),
        )
        self.clock = clock
        self._buf = bytearray()
        self._played = 0.0
        self._flushed = False
        self._paused = False
        self._segment_open = False
        self._started = False
        self.play_starts: list[PlayStart] = []
        """The tick (and wall time) of the first played sample of every segment."""
        self.last_sound = 0.0
        self._task = asyncio.create_task(self._play(), name="simulated-speaker")

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self._segment_open = True
        self._buf += frame.data.tobytes()

    def flush(self) -> None:
        super().flush()
        if self._segment_open:
            self._flushed = True

    def clear_buffer(self) -> None:
        # the framework's interruption: stop now and report what was actually heard
        self._buf.clear()
        if self._segment_open:
            self._finish(interrupted=True)

    def pause(self) -> None:
        super().pause()
        self._paused = True

    def resume(self) -> None:
        super().resume()
        self._paused = False

    @property
    def speaking(self) -> bool:
        return self._segment_open

    def _finish(self, *, interrupted: bool) -> None:
        position = self._played
        self._buf.clear()
        self._played = 0.0
        self._flushed = self._paused = self._segment_open = self._started = False
        self.on_playback_finished(playback_position=position, interrupted=interrupted)

    async def _play(self) -> None:
        tick = 0
        while True:
            await self.clock.wait_tick(tick)
            if self._buf and not self._paused:
                chunk = bytes(self._buf[: SAMPLES * 2])
                del self._buf[: SAMPLES * 2]
                if not self._started:
                    self._started = True
                    wall = self.clock.wall(tick)
                    self.play_starts.append(PlayStart(tick, wall))
                    self.on_playback_started(created_at=wall)
                Clock.record(self.clock.agent, tick, chunk)
                self._played += len(chunk) / 2 / audio.RATE
                self.last_sound = time.monotonic()
            elif self._segment_open and self._flushed and not self._buf:
                self._finish(interrupted=False)
            tick += 1

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
