"""Run a whole conversation with no room: scripted user audio in, a real-time sink out.

The session is a real livekit `AgentSession`, built by `handler.session.build_session` exactly as
the worker builds it. User audio enters at real-time pace on a 10 ms clock; the agent's audio is
played out on the same clock by a sink that supports pause, resume and clear, so endpointing,
interruptions and false-interruption resume behave as they do in a room. Both tracks are recorded
on that shared timeline, so the WAVs line up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents.voice import io

from handler import audio, logcontext
from handler.config import Settings
from handler.http import close_shared_session
from handler.registry import Registry
from handler.resilience.session_end import run_until_closed
from handler.scenario import Event, Scenario
from handler.session import build_session, make_runtime, observed, prewarm_settled, start_prewarm

logger = logging.getLogger("handler.simulate")

TICK = 0.01
SAMPLES = int(audio.RATE * TICK)
REPLY_START_TIMEOUT = 15.0
REPLY_END_TIMEOUT = 60.0
BABBLE_TEXT = "the quick brown fox jumps over the lazy dog while seven people talk at once"
SETTLE = 0.6
"""Seconds the agent must stay quiet before a turn counts as finished (bridges the gap between
sentences and a false-interruption pause)."""


class Clock:
    """Shared 10 ms ticks since the start of the conversation: the input and the sink both follow
    it, and record their audio at the tick's position."""

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
        return self.wall_start + n * TICK

    @staticmethod
    def record(track: bytearray, n: int, chunk: bytes) -> None:
        pos = n * SAMPLES * 2
        if len(track) < pos:
            track.extend(bytes(pos - len(track)))
        track[pos : pos + len(chunk)] = chunk


class ScriptedInput(io.AudioInput):
    """Silence, except while the runner plays a clip; frames leave on the clock's ticks."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(label="simulated-user")
        self.clock = clock
        self.tick = 0
        self._clip = np.zeros(0, np.int16)
        self._pos = 0
        self._done: asyncio.Future[float] | None = None

    def play(self, pcm: np.ndarray) -> asyncio.Future[float]:
        """Queue a clip; the future resolves to the wall time its last sample left."""
        self._clip, self._pos = pcm, 0
        self._done = asyncio.get_running_loop().create_future()
        return self._done

    async def __anext__(self) -> rtc.AudioFrame:
        await self.clock.wait_tick(self.tick)
        chunk = np.zeros(SAMPLES, np.int16)
        if self._pos < len(self._clip):
            part = self._clip[self._pos : self._pos + SAMPLES]
            chunk[: len(part)] = part
            self._pos += SAMPLES
            if self._pos >= len(self._clip) and self._done and not self._done.done():
                self._done.set_result(self.clock.wall(self.tick + 1))
        data = chunk.tobytes()
        Clock.record(self.clock.user, self.tick, data)
        self.tick += 1
        return rtc.AudioFrame(data, audio.RATE, 1, SAMPLES)


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
        self._pushed = 0.0
        self._played = 0.0
        self._flushed = False
        self._paused = False
        self._segment_open = False
        self._started = False
        self.play_starts: list[float] = []
        """Wall time of the first played sample of every segment."""
        self.last_sound = 0.0
        self._task = asyncio.create_task(self._play(), name="simulated-speaker")

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self._segment_open = True
        self._buf += frame.data.tobytes()
        self._pushed += frame.duration

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
        self._pushed = self._played = 0.0
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
                    self.play_starts.append(wall)
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


# ----------------------------------------------------------------------------- report


@dataclass
class TurnReport:
    n: int
    kind: str
    """"turn" for a scripted user turn, "barge_in" for speech that cut into a reply."""
    said: str
    speech_end: float = 0.0
    recognized: str = ""
    reply: str = ""
    ttfa: float | None = None
    """End of user speech (last voiced sample) -> first agent audio played, measured here."""
    e2e_latency: float | None = None
    end_of_turn_delay: float | None = None
    transcription_delay: float | None = None
    llm_ttft: float | None = None
    llm_ttfs: float | None = None
    """LLM start -> its first sentence handed to the TTS (livekit's llm_node_ttfs)."""
    tts_ttfb: float | None = None
    interrupted: bool = False
    false_interruptions: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def floor(self) -> float | None:
        """What the configuration and the providers cost in series: the end-of-turn wait (VAD
        silence, endpointing delay, STT finalisation), the LLM's first sentence (time to first
        token plus the rest of that sentence) and the TTS's first byte. The handler's overhead is
        what time to first audio adds above it (negative when preemptive generation overlaps
        the LLM with the endpointing wait)."""
        parts = (self.end_of_turn_delay, self.llm_ttfs or self.llm_ttft, self.tts_ttfb)
        return None if any(p is None for p in parts) else sum(parts)  # type: ignore[arg-type]

    @property
    def overhead(self) -> float | None:
        floor = self.floor
        return None if floor is None or self.ttfa is None else self.ttfa - floor

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "speech_end"}
        d["floor"], d["overhead"] = self.floor, self.overhead
        for k in (*TIMINGS, "floor", "overhead"):
            d[k] = None if d[k] is None else round(d[k], 3)
        return d


TIMINGS = (
    "ttfa",
    "e2e_latency",
    "end_of_turn_delay",
    "transcription_delay",
    "llm_ttft",
    "llm_ttfs",
    "tts_ttfb",
)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words): Levenshtein distance over lower-cased words."""
    ref = _words(reference)
    hyp = _words(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1], len(ref)


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c in " '" else " " for c in text.lower()).split()


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: every reported value was measured)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(np.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass
class Report:
    scenario: str
    env: str
    providers: dict[str, str]
    turns: list[TurnReport]
    duration: float
    errors: list[str]
    expect: dict[str, int]
    settings: dict[str, Any]
    ended: str | None = None
    """Why the session ended before the scenario did (a stage down for good), or None."""

    def summary(self) -> dict[str, Any]:
        ttfas = [t.ttfa for t in self.turns if t.ttfa is not None]
        edits = refs = 0
        for t in self.turns:
            e, r = word_errors(t.said, t.recognized)
            edits, refs = edits + e, refs + r
        false = sum(t.false_interruptions for t in self.turns)
        minutes = self.duration / 60
        p50, p95 = percentile(ttfas, 50), percentile(ttfas, 95)
        return {
            "turns": len(self.turns),
            "duration_s": round(self.duration, 2),
            "ttfa_p50": None if p50 is None else round(p50, 3),
            "ttfa_p95": None if p95 is None else round(p95, 3),
            "interruptions": sum(t.interrupted for t in self.turns),
            "false_interruptions": false,
            "false_interruptions_per_min": round(false / minutes, 2) if minutes else 0.0,
            "wer": round(edits / refs, 3) if refs else None,
            "errors": len(self.errors),
            "breakdown_p50": self.breakdown(),
        }

    def breakdown(self) -> dict[str, float | None]:
        """Median of each part of time to first audio over the turns that have it."""
        out: dict[str, float | None] = {}
        for name in ("end_of_turn_delay", "llm_ttft", "llm_ttfs", "tts_ttfb", "floor", "ttfa", "overhead"):
            values = [v for t in self.turns if (v := getattr(t, name)) is not None]
            p = percentile(values, 50)
            out[name] = None if p is None else round(p, 3)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "env": self.env,
            "providers": self.providers,
            "settings": self.settings,
            "turns": [t.to_dict() for t in self.turns],
            "summary": self.summary(),
            "expect": self.expect,
            "errors": self.errors,
            "ended": self.ended,
        }


# ----------------------------------------------------------------------------- runner


class Conversation:
    """Plays a scenario into a started session and gathers what happened, turn by turn."""

    def __init__(
        self, session: Any, scenario: Scenario, clips: dict[int, np.ndarray], progress: Callable[[str], None]
    ) -> None:
        self.session = session
        self.scenario = scenario
        self.clips = clips
        self.progress = progress
        self.clock = Clock()
        self.input = ScriptedInput(self.clock)
        self.sink = RealtimeSink(self.clock)
        self.turns: list[TurnReport] = []
        self.errors: list[str] = []
        self.failed_at = 0.0
        """Wall time of the last error the session gave up on (a request that spent its retries)."""
        self._users: list[Any] = []
        session.input.audio = self.input
        session.output.audio = self.sink
        session.on("conversation_item_added", self._on_item)
        session.on("agent_false_interruption", self._on_false_interruption)
        session.on("error", self._on_error)

    # events ---------------------------------------------------------------

    def _turn_at(self, t: float) -> TurnReport | None:
        """The utterance a user message belongs to: the latest one without a transcript that ended
        by `t` (+1 s of slack for the recognizer's clock), so a turn heard as nothing (fillers
        only) does not shift every later transcript onto the turn before it."""
        candidates = [r for r in self.turns if r.speech_end and r.speech_end <= t + 1.0 and not r.recognized]
        return candidates[-1] if candidates else None

    def _on_item(self, ev: Any) -> None:
        msg = ev.item
        if getattr(msg, "type", None) != "message":
            return
        text = msg.text_content or ""
        m = msg.metrics or {}
        if msg.role == "user":
            turn = self._turn_at(m.get("stopped_speaking_at") or time.time())
            if turn is None:  # speech the scenario did not script as a turn (noise heard as words)
                self.errors.append(f"unscripted user message recognized: {text!r}")
                return
            turn.recognized = text
            turn.end_of_turn_delay = m.get("end_of_turn_delay")
            turn.transcription_delay = m.get("transcription_delay")
            self._users.append(turn)
        elif msg.role == "assistant" and self._users:
            turn = self._users[-1]
            if turn.reply:  # a resumed reply arrives as a second message: keep the first
                return
            turn.reply = text
            turn.interrupted = msg.interrupted
            turn.e2e_latency = m.get("e2e_latency")
            turn.llm_ttft = m.get("llm_node_ttft")
            turn.llm_ttfs = m.get("llm_node_ttfs")
            turn.tts_ttfb = m.get("tts_node_ttfb")

    def _on_false_interruption(self, ev: Any) -> None:
        if ev.resumed and self.turns:
            replying = [t for t in self.turns if t.speech_end and t.speech_end < time.time()]
            (replying[-1] if replying else self.turns[-1]).false_interruptions += 1

    def _on_error(self, ev: Any) -> None:
        err = getattr(ev, "error", ev)  # livekit's LLMError / STTError / TTSError
        if getattr(err, "recoverable", False):
            return  # one failed attempt that is being retried, not an error of the session
        self.failed_at = time.time()
        cause = getattr(err, "error", err)
        self.errors.append(f"{getattr(err, 'type', 'error')}: {type(cause).__name__}: {cause}")

    # timeline -------------------------------------------------------------

    async def _say(self, kind: str, said: str, pcm: np.ndarray) -> TurnReport:
        report = TurnReport(n=len(self.turns) + 1, kind=kind, said=said)
        self.turns.append(report)
        ended = await self.input.play(pcm)
        report.speech_end = ended - audio.trailing_silence(pcm)
        return report

    async def _wait_reply_start(self, after: float) -> float | None:
        deadline = time.monotonic() + REPLY_START_TIMEOUT
        while time.monotonic() < deadline:
            starts = [s for s in self.sink.play_starts if s > after]
            if starts:
                return starts[0]
            if self.failed_at > after and self.session.agent_state == "listening":
                return None  # the reply failed for good (retries spent): the session goes on
            await asyncio.sleep(TICK)
        return None

    async def _wait_quiet(self) -> None:
        """Until the agent has finished answering: not speaking or thinking, sink idle a while."""
        deadline = time.monotonic() + REPLY_END_TIMEOUT
        while time.monotonic() < deadline:
            busy = self.sink.speaking or self.session.agent_state in ("thinking", "speaking")
            if not busy and time.monotonic() - self.sink.last_sound > SETTLE:
                return
            await asyncio.sleep(0.05)
        self.errors.append(f"agent still busy after {REPLY_END_TIMEOUT:.0f} s")

    async def _during_reply(self, turn: TurnReport, start: float, event: Event, index: int) -> None:
        await asyncio.sleep(max(0.0, start + event.at - time.time()))
        pcm = self.clips[index]
        if event.kind == "barge_in":
            barge = await self._say("barge_in", event.say or str(event.wav), pcm)
            first = await self._wait_reply_start(barge.speech_end)
            barge.ttfa = None if first is None else first - barge.speech_end
        else:
            await self.input.play(pcm)
            turn.notes.append(f"{event.kind} at +{event.at:.1f}s")

    async def run(self) -> None:
        index = 0
        for t in self.scenario.turns:
            await asyncio.sleep(t.pause)
            turn = await self._say("turn", t.say or str(t.wav), self.clips[index])
            index += 1
            start = await self._wait_reply_start(turn.speech_end)
            if start is None:
                failed = self.failed_at > turn.speech_end
                turn.notes.append("no reply: " + (self.errors[-1] if failed else "timed out"))
                self.progress(
                    f"turn {turn.n}: no reply "
                    + (f"({self.errors[-1]})" if failed else f"within {REPLY_START_TIMEOUT:.0f} s")
                )
                index += len(t.during_reply)
                continue
            turn.ttfa = start - turn.speech_end
            self.progress(f"turn {turn.n}: {turn.said!r} -> first audio after {turn.ttfa * 1000:.0f} ms")
            for event in t.during_reply:
                await self._during_reply(turn, start, event, index)
                index += 1
            await self._wait_quiet()


async def _clips(scenario: Scenario, registry: Registry, settings: Settings) -> dict[int, np.ndarray]:
    """Every sound the user makes, in scenario order, as 16 kHz mono: WAV files as given
    (converted), text spoken by the local TTS in the scenario's user voice, noises generated."""
    from handler.runtime import Runtime

    user_tts = registry.build(
        "tts",
        settings.with_overrides({"tts.local.voice": scenario.user_voice}, "scenario"),
        Runtime(settings, None, None),
        name="local",
    )

    async def speak(text: str) -> np.ndarray:
        frames = [ev.frame async for ev in user_tts.synthesize(text)]
        frame = rtc.combine_audio_frames(frames)
        pcm = np.frombuffer(frame.data, np.int16)
        return audio.resample(pcm, frame.sample_rate, audio.RATE)

    async def babble(duration: float, level: float) -> np.ndarray:
        # speech played backwards: speech's spectrum and rhythm, no words in it
        pcm = (await speak(BABBLE_TEXT))[::-1]
        return audio.at_level(np.resize(pcm, int(duration * audio.RATE)), level)

    async def clip(say: str | None, wav: Any, kind: str = "", ev: Event | None = None) -> np.ndarray:
        if wav is not None:
            pcm, _ = audio.read_wav(wav)
            return pcm
        if say is not None:
            return await speak(say)
        assert ev is not None
        if kind == "noise":
            return audio.noise_burst(ev.duration, ev.level)
        if kind == "babble":
            return await babble(ev.duration, ev.level)
        return audio.click(ev.duration, ev.level)

    try:  # the TTS is closed whatever a clip does
        out: dict[int, np.ndarray] = {}
        i = 0
        for t in scenario.turns:
            out[i] = await clip(t.say, t.wav)
            i += 1
            for ev in t.during_reply:
                out[i] = await clip(ev.say, ev.wav, ev.kind, ev)
                i += 1
    finally:
        await user_tts.aclose()
    return out


async def simulate(
    settings: Settings,
    registry: Registry,
    scenario: Scenario,
    progress: Callable[[str], None] = lambda s: None,
) -> tuple[Report, Clock]:
    settings = settings.with_overrides(
        {"stt.local.phrases": scenario.recognizer_phrases()}, f"scenario {scenario.name}"
    )
    runtime = make_runtime(settings, registry)
    warming = None
    session = sink = None
    ended: str | None = None
    try:
        # as the worker does: connections open while the rest is set up (here: the user's audio)
        warming = start_prewarm(settings, registry, runtime)
        clips = await _clips(scenario, registry, settings)
        session, agent = build_session(settings, registry, runtime)
        info = {"simulation": scenario.name}
        with logcontext.bound(session=f"sim-{scenario.name}"):
            convo = Conversation(session, scenario, clips, progress)
            sink = convo.sink
            await prewarm_settled(warming)
            async with observed(session, settings, registry, info):
                await session.start(agent=agent)
                # a session that ends under the conversation (a stage down for good) ends the run
                ended = await run_until_closed(convo.run(), session)
                if ended:
                    convo.errors.append(f"session ended: {ended}")
                    progress(f"session ended: {ended}")
    finally:  # the session, the sink, the pre-warm and the process's pool go with the run
        if session is not None:
            await session.aclose()
        if sink is not None:
            await sink.aclose()
        if warming is not None:
            warming.cancel()
        await close_shared_session()
    report = Report(
        scenario=scenario.name,
        env=settings.env,
        providers={s: settings.get(f"{s}.provider") for s in ("vad", "stt", "llm", "tts")},
        turns=convo.turns,
        duration=time.monotonic() - convo.clock.start,
        errors=convo.errors,
        expect=scenario.expect,
        settings={
            "min_endpointing_delay": settings.get("turn.min_endpointing_delay"),
            "interruption_threshold": settings.get("turn.interruption_threshold"),
            "false_interruption_timeout": settings.get("turn.false_interruption_timeout"),
        },
        ended=ended,
    )
    return report, convo.clock
