"""`python -m handler call`: a caller in a real LiveKit room, talking to a dispatched agent.

The caller joins a room with a token that dispatches `worker.agent_name` to it, publishes the
scenario's user audio as a microphone track at real-time pace (the simulator's scripted input,
frame for frame, so `simulate` and `call` feed the same samples), records the agent's audio as
it arrives, finds where each reply starts in it, and reads the room's transcriptions for what the
agent heard and said. It sees only what any participant sees: the report has `simulate`'s schema,
with `ttfa` measured client-side (end of the user's speech as sent -> first agent audio received)
and the server-side parts (end of turn, LLM, TTS) left empty.

Interruptions come from the agent's published state (`lk.agent.state`): a reply that stops while
the user makes a sound, and resumes with no new user transcript, was paused by a false
interruption; one that does not resume was interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc

from handler import audio, livekit_compat
from handler.config import redact
from handler.pipeline.turns import TurnRecord
from handler.room.target import CallError, Target, check_url  # noqa: F401  (their home was here)
from handler.sim.io import SAMPLES, TICK, Clock, ScriptedInput, ticks
from handler.sim.report import Report, SimTurn
from handler.sim.runner import REPLY_END_TIMEOUT, REPLY_START_TIMEOUT, SETTLE
from handler.sim.scenario import Scenario

logger = logging.getLogger("handler.room")

TRANSCRIPTION_TOPIC = "lk.transcription"
FINAL = "lk.transcription_final"
TRACK_ID = "lk.transcribed_track_id"
AGENT_STATE = "lk.agent.state"

ONSET_DBFS = -40.0
"""A received 10 ms frame louder than this is agent speech (the agent's silence is digital zero;
Opus keeps it below -60 dBFS)."""
GAP = 0.25
"""Seconds of quiet before a loud frame counts as the start of a reply."""
JOIN_TIMEOUT = 15.0
DISPATCH_TIMEOUT = 30.0
"""Seconds for a worker to take the dispatch and publish its audio track."""
PUBLISH_TICKS = 4
"""Ticks (10 ms each) handed to the microphone's source in one frame, at the first one's time: the
source plays them out at real-time pace, so each sample still leaves on its tick, and the caller
makes a quarter of the calls into livekit's FFI (each a request, a reply event and a wake-up of
its loop). The loadtest's callers share the machine with the worker they measure."""
TRANSCRIPT_WAIT = 2.0
"""Seconds the call stays after its last reply for the final transcripts to arrive."""


def late_silence(frame: rtc.AudioFrame, due: float, now: float) -> bool:
    """Whether to drop this frame instead of sending it: silence more than a tick behind `due`
    at `now` (both monotonic time).

    An AudioSource sends 10 ms every 10 ms from what it holds and fills a gap with silence, so a
    frame handed over late (the caller's loop was busy) puts everything after it that much behind
    its tick for good (`measurements/room_oneway.py --stall 80`: 131 ms one way instead of 59), and
    the report would count that as the room's. Dropping late silence puts the track back on the
    clock before the next sound; speech is never dropped."""
    return now - due > TICK and not np.frombuffer(frame.data, np.int16).any()


async def publish(source: rtc.AudioSource, scripted: ScriptedInput, n: int) -> int:
    """The input's next `n` ticks as one frame into `source` (late silence left out); returns
    the samples sent."""
    chunks = []
    for _ in range(n):
        due = scripted.clock.start + scripted.tick * TICK
        frame = scripted.take()
        if not late_silence(frame, due, time.monotonic()):
            chunks.append(bytes(frame.data))
    data = b"".join(chunks)
    if data:
        await source.capture_frame(rtc.AudioFrame(data, audio.RATE, 1, len(data) // 2))
    return len(data) // 2


# ----------------------------------------------------------------------------- what the caller hears


class AgentAudio:
    """The agent's track as received, recorded on the call's clock; reply onsets found in it."""

    def __init__(self) -> None:
        self.clock: Clock | None = None
        """Set when the conversation starts; audio before it (the greeting, if any) is not recorded."""
        self.play_starts: list[float] = []
        """Wall time a reply's first loud frame arrived, for every onset after GAP of quiet."""
        self.last_sound = 0.0
        """Monotonic time of the last loud frame."""
        self.first_frame = asyncio.get_running_loop().create_future()
        self._tick = 0
        self._limit = 32768 * 10 ** (ONSET_DBFS / 20)

    @property
    def speaking(self) -> bool:
        return time.monotonic() - self.last_sound < GAP

    async def run(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(
            track, sample_rate=audio.RATE, num_channels=1, frame_size_ms=int(TICK * 1000)
        )
        livekit_compat.own_stream_events_only(stream)
        try:
            async for ev in stream:
                self.receive(ev.frame.data.tobytes())
        finally:
            await stream.aclose()

    def receive(self, chunk: bytes) -> None:
        now = time.monotonic()
        if not self.first_frame.done():
            self.first_frame.set_result(now)
        if self.clock is not None:
            # frames arrive in bursts after network jitter: keep them in order on the timeline
            self._tick = max(self._tick, round((now - self.clock.start) / TICK))
            Clock.record(self.clock.agent, self._tick, chunk)
            self._tick += max(1, len(chunk) // (2 * SAMPLES))
        pcm = np.frombuffer(chunk, np.int16).astype(np.float32)
        # RMS > limit, squared: no square root or np.mean wrapper, 100 frames a second a caller
        if pcm.size and float(np.dot(pcm, pcm)) > self._limit * self._limit * pcm.size:
            if now - self.last_sound > GAP:
                self.play_starts.append(time.time())
            self.last_sound = now


@dataclass
class RoomEvents:
    """What the room says besides audio: transcripts and the agent's state, with arrival times."""

    user_track: str = ""
    user_transcripts: list[tuple[float, str]] = field(default_factory=list)
    agent_transcripts: list[tuple[float, str]] = field(default_factory=list)
    states: list[tuple[float, str]] = field(default_factory=list)

    @property
    def agent_state(self) -> str:
        return self.states[-1][1] if self.states else "initializing"

    async def read_transcript(self, reader: rtc.TextStreamReader, sender: str) -> None:
        text = await reader.read_all()
        attrs = reader.info.attributes or {}
        if attrs.get(FINAL) != "true" or not text.strip():
            return  # interim text: the final one repeats it whole
        heard = (time.time(), text.strip())
        if attrs.get(TRACK_ID) and attrs.get(TRACK_ID) == self.user_track:
            self.user_transcripts.append(heard)
        else:
            self.agent_transcripts.append(heard)

    def on_attributes(self, participant: rtc.Participant) -> None:
        state = participant.attributes.get(AGENT_STATE)
        if state and state != self.agent_state:
            self.states.append((time.time(), state))


# ----------------------------------------------------------------------------- the call


@dataclass
class CallTurn:
    """What the caller saw of one turn; becomes the report's SimTurn and TurnRecord."""

    n: int
    kind: str
    said: str
    speech_start: float = 0.0
    """Wall time its first sample was sent."""
    speech_end: float = 0.0
    """Wall time the last voiced sample was sent."""
    ttfa: float | None = None
    """Client-side: end of speech as sent -> first agent audio received."""
    recognized: str = ""
    reply: str = ""
    interrupted: bool = False
    false_interruptions: int = 0
    notes: list[str] = field(default_factory=list)

    def sim_turn(self) -> SimTurn:
        # for a caller the audio "played" is the audio received: one measure, in both fields
        record = TurnRecord(
            n=self.n,
            answered=self.ttfa is not None,
            user_text=self.recognized,
            reply_text=self.reply,
            user_stopped_at=self.speech_end,
            ttfa=self.ttfa,
            interrupted=self.interrupted,
            false_interruptions=self.false_interruptions,
        )
        return SimTurn(
            n=self.n,
            kind=self.kind,
            said=self.said,
            speech_end=self.speech_end,
            ttfa_played=self.ttfa,
            record=record,
            notes=self.notes,
        )


class Call:
    """Plays a scenario into a room where an agent answers, and gathers what happened."""

    def __init__(
        self,
        target: Target,
        scenario: Scenario,
        clips: list[np.ndarray],
        progress: Callable[[str], None],
        agent_timeout: float = DISPATCH_TIMEOUT,
        reply_timeout: float = REPLY_START_TIMEOUT,
    ) -> None:
        self.target = target
        self.reply_timeout = reply_timeout
        """Seconds to wait for a reply to start: the agent rides a failing stage out that long."""
        self.scenario = scenario
        self.clips = clips
        self.progress = progress
        self.room_name = target.room or f"call-{scenario.name}-{secrets.token_hex(3)}"
        self.identity = f"caller-{secrets.token_hex(3)}"
        self.room = rtc.Room()
        self.clock = Clock()
        self.input = ScriptedInput(self.clock)
        self.agent_audio = AgentAudio()
        self.events = RoomEvents()
        self.turns: list[CallTurn] = []
        self.errors: list[str] = []
        self.sounds: list[tuple[float, float]] = []
        """(start, end) wall times of sounds the user made during replies."""
        self.agent_left: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.failure: CallError | None = None
        """Set when the call ended early (the agent left): the report covers what happened until then."""
        self.agent_timeout = agent_timeout
        self._agent_identity = ""
        self._tasks: set[asyncio.Task[Any]] = set()

    # set-up -------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _wire(self) -> None:
        room = self.room

        @room.on("track_subscribed")
        def _track(track: rtc.Track, pub: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant) -> None:
            if (
                who.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
                and track.kind == rtc.TrackKind.KIND_AUDIO
            ):
                self._agent_identity = who.identity
                self.events.on_attributes(who)
                self._spawn(self.agent_audio.run(track))

        @room.on("participant_attributes_changed")
        def _attrs(changed: dict[str, str], who: rtc.Participant) -> None:
            if who.identity == self._agent_identity or who.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
                self.events.on_attributes(who)

        @room.on("participant_disconnected")
        def _left(who: rtc.RemoteParticipant) -> None:
            if who.identity == self._agent_identity and not self.agent_left.done():
                self.agent_left.set_result(time.time())

        room.register_text_stream_handler(
            TRANSCRIPTION_TOPIC,
            lambda reader, sender: self._spawn(self.events.read_transcript(reader, sender)),
        )

    async def connect(self) -> rtc.AudioSource:
        self._wire()
        token = self.target.token(self.identity, self.room_name)
        try:
            await asyncio.wait_for(self.room.connect(self.target.url, token), JOIN_TIMEOUT)
        except rtc.ConnectError as e:
            text = str(e.message).lower()
            if "401" in text or "unauthorized" in text or "invalid token" in text or "signature" in text:
                raise CallError(
                    "the LiveKit server refused the caller's token: "
                    "check LIVEKIT_API_KEY and LIVEKIT_API_SECRET",
                    2,
                ) from None
            cause = redact(str(e.message), [self.target.api_secret])
            raise CallError(f"cannot join a room at LIVEKIT_URL ({cause}): check LIVEKIT_URL", 2) from None
        except TimeoutError:
            raise CallError(
                f"no answer from LIVEKIT_URL within {JOIN_TIMEOUT:.0f} s: check LIVEKIT_URL", 2
            ) from None
        source = rtc.AudioSource(audio.RATE, 1, queue_size_ms=100)  # > PUBLISH_TICKS ticks
        track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
        pub = await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        self.events.user_track = pub.sid
        self.progress(
            f"joined room {self.room_name} as {self.identity}; waiting for agent {self.target.agent_name!r}"
        )
        try:
            await asyncio.wait_for(asyncio.shield(self.agent_audio.first_frame), self.agent_timeout)
        except TimeoutError:
            raise CallError(
                f"no agent {self.target.agent_name!r} joined room {self.room_name} within "
                f"{self.agent_timeout:.0f} s: is a worker with that agent name registered and free?",
                1,
            ) from None
        return source

    async def _microphone(self, source: rtc.AudioSource) -> None:
        """The scripted input, frame for frame, onto the published track. The clock starts with
        the microphone: a clock started before the join would put every frame behind its tick,
        and the source (which takes frames at real-time pace) would never catch up, so every
        sound would leave later than the report says."""
        self.clock = self.input.clock = self.agent_audio.clock = Clock()
        while True:
            await self.clock.wait_tick(self.input.tick)
            await publish(source, self.input, PUBLISH_TICKS)

    # the conversation -----------------------------------------------------------

    async def _say(self, kind: str, said: str, pcm: np.ndarray, pause: float = 0.0) -> CallTurn:
        report = CallTurn(n=len(self.turns) + 1, kind=kind, said=said)
        self.turns.append(report)
        began = report.speech_start = time.time()
        ended = self.clock.wall(await self.input.play_at(pcm, self.input.tick + ticks(pause)))
        if kind == "barge_in":
            self.sounds.append((began, ended))
        report.speech_end = ended - audio.trailing_silence(pcm)
        return report

    async def _wait_reply_start(self, after: float) -> float | None:
        deadline = time.monotonic() + self.reply_timeout
        while time.monotonic() < deadline:
            starts = [s for s in self.agent_audio.play_starts if s > after]
            if starts:
                return starts[0]
            await asyncio.sleep(TICK)
        return None

    async def _wait_quiet(self) -> None:
        deadline = time.monotonic() + REPLY_END_TIMEOUT
        while time.monotonic() < deadline:
            busy = self.agent_audio.speaking or self.events.agent_state in ("thinking", "speaking")
            if not busy and time.monotonic() - self.agent_audio.last_sound > SETTLE:
                return
            await asyncio.sleep(0.05)
        self.errors.append(f"agent still busy after {REPLY_END_TIMEOUT:.0f} s")

    async def _sound(self, pcm: np.ndarray) -> None:
        began = time.time()
        ended = self.clock.wall(await self.input.play(pcm))
        self.sounds.append((began, ended))

    async def _conversation(self) -> None:
        index = 0
        for t in self.scenario.turns:
            turn = await self._say("turn", t.say or str(t.wav), self.clips[index], t.pause)
            index += 1
            start = await self._wait_reply_start(turn.speech_end)
            if start is None:
                turn.notes.append("no reply: timed out")
                self.progress(f"turn {turn.n}: no reply within {self.reply_timeout:.0f} s")
                index += len(t.during_reply)
                continue
            turn.ttfa = start - turn.speech_end
            self.progress(f"turn {turn.n}: {turn.said!r} -> first audio after {turn.ttfa * 1000:.0f} ms")
            for event in t.during_reply:
                await asyncio.sleep(max(0.0, start + event.at - time.time()))
                if event.kind == "barge_in":
                    barge = await self._say("barge_in", event.say or str(event.wav), self.clips[index])
                    first = await self._wait_reply_start(barge.speech_end)
                    barge.ttfa = None if first is None else first - barge.speech_end
                else:
                    await self._sound(self.clips[index])
                    turn.notes.append(f"{event.kind} at +{event.at:.1f}s")
                index += 1
            await self._wait_quiet()

    async def run(self) -> None:
        source = await self.connect()
        mic = asyncio.ensure_future(self._microphone(source))
        talk = asyncio.ensure_future(self._conversation())
        try:
            waiting: set[asyncio.Future[Any]] = {talk, self.agent_left}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if self.agent_left in done and not talk.done():
                self.failure = CallError(
                    f"the agent left room {self.room_name} mid-call (during turn {len(self.turns)} "
                    f"of {len(self.scenario.turns)})",
                    1,
                )
                self.errors.append(str(self.failure))
            else:
                talk.result()
                await asyncio.sleep(TRANSCRIPT_WAIT)
        finally:
            for task in (talk, mic, *self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await self.room.disconnect()
            self._attribute()

    # what happened, per turn ------------------------------------------------------

    def _attribute(self) -> None:
        """Transcripts and the agent's state changes onto the turns they belong to."""
        for at, text in self.events.user_transcripts:
            # the latest turn that had begun: the recognizer hears nothing before it is said, and
            # the caller speaks again only after the reply. A turn with a pause in it ("my order
            # number is ... four two seven") can come as several final segments, the first before
            # the turn's speech ends: they are joined.
            begun = [t for t in self.turns if t.speech_start and t.speech_start <= at]
            if begun:
                t = begun[-1]
                t.recognized = f"{t.recognized} {text}".strip()
            else:
                self.errors.append(f"unscripted user message recognized: {text!r}")
        replies = [(t, t.speech_end + (t.ttfa or 0.0)) for t in self.turns if t.ttfa is not None]
        for at, text in self.events.agent_transcripts:
            owners = [t for t, start in replies if start <= at + 0.5]
            if owners:
                owner = owners[-1]
                owner.reply = f"{owner.reply} {text}".strip() if owner.reply else text
        self._interruptions(replies)

    def _interruptions(self, replies: list[tuple[CallTurn, float]]) -> None:
        states = self.events.states
        user_heard = [at for at, _ in self.events.user_transcripts]
        for i, (turn, start) in enumerate(replies):
            window_end = replies[i + 1][1] if i + 1 < len(replies) else float("inf")
            for j, (at, state) in enumerate(states):
                if not (start <= at < window_end) or state != "listening" or j == 0:
                    continue
                if states[j - 1][1] != "speaking" or not self._during_sound(at):
                    continue  # a reply that ended by itself
                resumed = next((t for t, s in states[j + 1 :] if s == "speaking"), None)
                new_turn = any(at <= h < (resumed or window_end) for h in user_heard)
                if resumed is not None and resumed < window_end and not new_turn:
                    turn.false_interruptions += 1
                else:
                    turn.interrupted = True

    def _during_sound(self, at: float) -> bool:
        # the agent stops within its minimum interruption duration plus a little after the sound
        return any(begin <= at <= end + 1.5 for begin, end in self.sounds)

    def report(self, env: str) -> Report:
        return Report(
            scenario=self.scenario.name,
            env=env,
            providers={"room": self.room_name, "agent": self.target.agent_name},
            turns=[t.sim_turn() for t in self.turns],
            duration=time.monotonic() - self.clock.start,
            errors=self.errors,
            expect=self.scenario.expect,
            settings={"transport": "livekit room", "ttfa": "client-side"},
        )


async def call(
    settings: Any,
    registry: Any,
    scenario: Scenario,
    target: Target,
    progress: Callable[[str], None] = lambda s: None,
    *,
    agent_timeout: float = DISPATCH_TIMEOUT,
) -> tuple[Report, Clock, CallError | None]:
    """One call: the scenario's user audio (made as `simulate` makes it) into a room."""
    from handler.sim.clips import make_clips

    clips = await make_clips(scenario, registry, settings)
    from handler.resilience.decider import late_reply_bound

    c = Call(
        target, scenario, clips, progress, agent_timeout, max(REPLY_START_TIMEOUT, late_reply_bound(settings))
    )
    await c.run()
    return c.report(settings.env), c.clock, c.failure
