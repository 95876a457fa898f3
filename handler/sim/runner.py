"""Run a whole conversation with no room: scripted user audio in, a real-time sink out.

The session is a real livekit `AgentSession`, built by `handler.pipeline.session.build` from the plan
exactly as the worker builds it, and followed by the core's turn tracker
(`handler.pipeline.session.observed`) exactly
as in the worker, so the report's turns are the records the metrics lines are written from. User
audio and the agent's audio share one 10 ms clock (`handler.sim.io`); sounds during a reply are
placed on the input's sample timeline relative to the reply's first played sample.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from livekit.agents.voice import TranscriptSynchronizer

from handler import audio
from handler.config import Settings
from handler.hookspecs import PROVIDER_STAGES, selector
from handler.observe import logcontext
from handler.pipeline.http import close_shared_session
from handler.pipeline.session import build, observed, prewarm_settled, start_warming
from handler.pipeline.turns import TurnRecord
from handler.plan import resolve
from handler.registry import Registry
from handler.resilience.decider import late_reply_bound
from handler.resilience.ledger import ledger_of
from handler.resilience.session_end import run_until_closed
from handler.sim.clips import Sounds, make_sounds
from handler.sim.io import TICK, Clock, PlayStart, RealtimeSink, ScriptedInput, ticks
from handler.sim.report import Report, SimTurn
from handler.sim.scenario import Event, Scenario

logger = logging.getLogger("handler.simulate")

REPLY_START_TIMEOUT = 15.0
REPLY_END_TIMEOUT = 60.0
SETTLE = 0.6
"""Seconds the agent must stay quiet before a turn counts as finished (bridges the gap between
sentences and a false-interruption pause)."""
EARLY_REPLY_TIMEOUT = 5.0
"""Seconds to wait for a second reply after the agent cut the user off (it may talk on instead)."""
MATCH_SLACK = 1.0
"""Seconds livekit's end of user speech may lie after the simulator's (the recognizer's clock)."""


class Conversation:
    """Plays a scenario into a started session, turn by turn; the tracker's records are matched
    to the scripted turns afterwards (`attach_records`)."""

    def __init__(
        self,
        session: Any,
        scenario: Scenario,
        clips: list[np.ndarray],
        progress: Callable[[str], None],
        reply_timeout: float = REPLY_START_TIMEOUT,
    ) -> None:
        self.session = session
        self.reply_timeout = reply_timeout
        """Seconds to wait for a reply to start: a failing stage is ridden out that long."""
        self.scenario = scenario
        self.clips = clips
        self.progress = progress
        self.clock = Clock()
        self.input = ScriptedInput(self.clock)
        self.sink = RealtimeSink(self.clock)
        self.turns: list[SimTurn] = []
        self.errors: list[str] = []
        self.failed_at = 0.0
        """Wall time of the last error the session gave up on (a request that spent its retries)."""
        session.input.audio = self.input
        # the speaker behind livekit's transcript synchronizer, as in a room (RoomIO) and in
        # livekit's console: a reply that stops early (the user cut in, the TTS failed mid-stream)
        # goes into the chat history, and so the turn record, as the words actually played
        self.transcript = TranscriptSynchronizer(next_in_chain_audio=self.sink, next_in_chain_text=None)
        session.output.audio = self.transcript.audio_output
        session.output.transcription = self.transcript.text_output
        # flow control only (stop waiting for a reply that failed for good, and say why): the
        # turn tracker counts the errors for every report
        session.on("error", self._on_error)
        self.announced_at: float | None = None
        """When the agent first spoke on its own (`session.say`: the apology of a call ended for a
        stage that is down), not in reply to the user: its audio cuts no one off."""
        session.on("speech_created", self._on_speech)

    def _on_speech(self, ev: Any) -> None:
        if getattr(ev, "source", None) == "say" and self.announced_at is None:
            self.announced_at = time.time()

    def _on_error(self, ev: Any) -> None:
        err = getattr(ev, "error", ev)  # livekit's LLMError / STTError / TTSError
        if getattr(err, "recoverable", False):
            return  # one failed attempt that is being retried, not an error of the session
        self.failed_at = time.time()
        cause = getattr(err, "error", err)
        self.errors.append(f"{getattr(err, 'type', 'error')}: {type(cause).__name__}: {cause}")

    def attach_records(self, records: list[TurnRecord]) -> None:
        """Give each scripted turn the tracker's record of it: the latest utterance without a
        record that ended by the time livekit saw the user stop (plus slack), so a turn heard as
        nothing (fillers only) does not shift every later record onto the turn before it."""
        for record in records:
            stopped = record.user_stopped_at or time.time()
            # (a turn whose speech the session's end cut off has no speech_end: it was never heard)
            candidates = [
                t for t in self.turns if t.record is None and 0 < t.speech_end <= stopped + MATCH_SLACK
            ]
            if not candidates:  # speech the scenario did not script as a turn (noise heard as words)
                self.errors.append(f"unscripted user message recognized: {record.user_text!r}")
                continue
            candidates[-1].record = record

    # timeline -------------------------------------------------------------

    async def _say(self, kind: str, said: str, pcm: np.ndarray, at_tick: int) -> SimTurn:
        turn = SimTurn(n=len(self.turns) + 1, kind=kind, said=said)
        self.turns.append(turn)
        end_tick = await self.input.play_at(pcm, at_tick)
        turn.speech_end = self.clock.wall(end_tick) - audio.trailing_silence(pcm)
        return turn

    async def _wait_reply_start(self, after: float, timeout: float | None = None) -> PlayStart | None:
        # a reply whose request failed for good is asked for again while the stage is ridden
        # out (handler.resilience.decider), and a session whose stage is down ends the run: a
        # failed request is no reason to stop waiting
        deadline = time.monotonic() + (self.reply_timeout if timeout is None else timeout)
        faults = ledger_of(self.session)
        while time.monotonic() < deadline:
            starts = [s for s in self.sink.play_starts if s.wall > after]
            # once the call is decided over, what plays is the apology, no reply: the session's
            # close ends the run
            if starts and (faults is None or not faults.ended):
                return starts[0]
            await asyncio.sleep(TICK)
        return None

    def _reply_owed(self) -> bool:
        """A failing stage is ridden out and the caller's last message has no reply yet: what
        played was the hold line, and the answer is still to come (as a caller would, wait)."""
        faults = ledger_of(self.session)
        if faults is None or not faults.failing:
            return False
        messages = [i for i in self.session.history.items if getattr(i, "type", None) == "message"]
        return bool(messages) and messages[-1].role == "user"

    async def _wait_quiet(self) -> None:
        """Until the agent has finished answering: not speaking or thinking, sink idle a while."""
        deadline = time.monotonic() + REPLY_END_TIMEOUT
        while time.monotonic() < deadline:
            busy = self.sink.speaking or self.session.agent_state in ("thinking", "speaking")
            if not busy and time.monotonic() - self.sink.last_sound > SETTLE and not self._reply_owed():
                return
            await asyncio.sleep(0.05)
        self.errors.append(f"agent still busy after {REPLY_END_TIMEOUT:.0f} s")

    async def _barge_in(self, event: Event, pcm: np.ndarray, at_tick: int) -> None:
        barge = await self._say("barge_in", event.say or str(event.wav), pcm, at_tick)
        first = await self._wait_reply_start(barge.speech_end)
        barge.ttfa_played = None if first is None else first.wall - barge.speech_end
        self._progress_turn(barge)

    def _progress_turn(self, turn: SimTurn) -> None:
        if turn.ttfa_played is None:
            return
        self.progress(f"turn {turn.n}: {turn.said!r} -> first audio after {turn.ttfa_played * 1000:.0f} ms")

    async def run(self) -> None:
        clips = iter(self.clips)
        for t in self.scenario.turns:
            seen = len(self.sink.play_starts)
            turn = await self._say("turn", t.say or str(t.wav), next(clips), self.input.tick + ticks(t.pause))
            during = [(event, next(clips)) for event in t.during_reply]
            # a reply that began while the user was still speaking (mid-sentence, in a pause) cut
            # the user off; the agent may answer again once the sentence is complete, or not
            early = [
                s
                for s in self.sink.play_starts[seen:]
                if s.wall < turn.speech_end and (self.announced_at is None or s.wall < self.announced_at)
            ]
            turn.premature_cutoffs = len(early)
            start = await self._wait_reply_start(turn.speech_end, EARLY_REPLY_TIMEOUT if early else None)
            if start is None and early:
                turn.notes.append(
                    f"cut off: the reply began {turn.speech_end - early[0].wall:.2f}s before the end"
                )
                self.progress(f"turn {turn.n}: the agent began its reply before the user had finished")
                start = early[-1]
            elif start is not None:
                turn.ttfa_played = start.wall - turn.speech_end
                self._progress_turn(turn)
            if start is None:
                failed = self.failed_at > turn.speech_end
                turn.notes.append("no reply: " + (self.errors[-1] if failed else "timed out"))
                self.progress(
                    f"turn {turn.n}: no reply "
                    + (f"({self.errors[-1]})" if failed else f"within {self.reply_timeout:.0f} s")
                )
                continue
            # every sound of this reply goes onto the input's timeline now, at its offset from
            # the reply's first played sample
            barge_ins = []
            for event, pcm in during:
                at_tick = start.tick + ticks(event.at)
                if at_tick < self.input.tick:
                    turn.notes.append(f"{event.kind} at +{event.at:.2f}s came late (the loop lagged)")
                if event.kind == "barge_in":
                    barge_ins.append(asyncio.create_task(self._barge_in(event, pcm, at_tick)))
                else:
                    self.input.play_at(pcm, at_tick)
                    turn.notes.append(f"{event.kind} at +{event.at:.2f}s")
            for barge in barge_ins:
                await barge
            await self._wait_quiet()


async def simulate(
    settings: Settings,
    registry: Registry,
    scenario: Scenario,
    progress: Callable[[str], None] = lambda s: None,
    *,
    sounds: Sounds | None = None,
    close_pool: bool = True,
    source: str = "simulate",
) -> tuple[Report, Clock]:
    """One conversation. `sounds`: the scenario's clips when the caller made them already;
    `close_pool=False` leaves the process's HTTP pool open for conversations running alongside;
    `source` names the command in the call record ("simulate", "bench")."""
    settings = settings.with_overrides(
        {"stt.local.phrases": scenario.recognizer_phrases()}, f"scenario {scenario.name}"
    )
    plan = resolve(settings, registry)
    runtime = plan.runtime(pooled=True)
    warming = None
    session = convo = None
    records: list[TurnRecord] = []
    ended: str | None = None
    try:
        # as the worker does: connections open while the rest is set up (here: the user's audio)
        warming = start_warming(plan, runtime)
        clips = (sounds or await make_sounds(scenario, registry, settings)).clips
        session, agent = build(plan, runtime)
        info = {"simulation": scenario.name, "source": source}
        with logcontext.bound(session=f"sim-{scenario.name}"):
            convo = Conversation(
                session, scenario, clips, progress, max(REPLY_START_TIMEOUT, late_reply_bound(settings))
            )
            await prewarm_settled(warming)
            async with observed(session, settings, registry, info) as tracker:
                await session.start(agent=agent)
                # a session that ends under the conversation (a stage down for good) ends the run
                ended = await run_until_closed(convo.run(), session)
                if ended:
                    convo.errors.append(f"session ended: {ended}")
                    progress(f"session ended: {ended}")
                records = tracker.records
    finally:  # the session, the sink, the pre-warm and the process's pool go with the run
        if session is not None:
            await session.aclose()
        if convo is not None:
            await convo.transcript.aclose()
            await convo.sink.aclose()
        if warming is not None:
            warming.cancel()
        if close_pool:
            await close_shared_session()
    assert convo is not None  # set before anything that can end the run without raising
    convo.attach_records(records)
    report = Report(
        scenario=scenario.name,
        env=settings.env,
        providers={s: settings.get(selector(s)) for s in PROVIDER_STAGES},
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
        agent_speech=audio.voiced_seconds(np.frombuffer(bytes(convo.clock.agent), np.int16)),
    )
    return report, convo.clock
