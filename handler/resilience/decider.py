"""A stage that stays down ends the call with a decision; a burst of errors is ridden out.

The decision is taken on time and evidence, not on a count of requests: a stage is down for good
once it has failed for `resilience.down_for` seconds without a single success, and at least
`EVIDENCE` of its requests failed for good in that time (every attempt and every provider of its
chain spent: the request, then the probe after the wait). Any success resets it: a transcript
(STT), a completed request (LLM and TTS: their providers' metrics). Then: one ERROR line saying which
stage is down and why, the configured apology when the TTS still works, and the session is shut
down. The reason is kept
on the fault ledger (`FaultLedger.ended`) for `simulate` (exit status 1) and the worker (the job
ends).

Until then the call is ridden out (`RideOut`): the STT keeps the utterance in flight and replays
it once the provider answers again (`stt_guard`); a reply whose LLM or TTS request failed for good
is asked for again after the probe wait (`resilience.probe_initial`, doubling up to `probe_max`),
each time as a new request with its own MAX_RETRIES + 1 attempts, so the turn is answered late
rather than lost. With `resilience.hold_line` set, the agent says it once when a caller has been
kept waiting `hold_after` seconds; never the goodbye.

livekit's own rule (close the session after `max_unrecoverable_errors`, 3, consecutive failed
requests of a stage) would end every burst of a few seconds: the session is built with
`LIVEKIT_ERROR_LIMIT` instead, and this decider is the one that decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from handler.resilience.breaker import Breaker
    from handler.resilience.ledger import FaultLedger

logger = logging.getLogger("handler.resilience")

STAGE_OF_ERROR = {"stt_error": "stt", "llm_error": "llm", "tts_error": "tts"}
SUCCESS_OF_METRICS = ("llm", "tts")
"""Stages whose success is a request that completed: livekit reports its metrics only then (the
agent speaking is no evidence for the LLM: the hold line and the apology need none)."""
EVIDENCE = 2
"""Requests failed for good, since the last success, before a stage can be called down: one
request proves the provider failed; the probe after the wait proves it did not come back."""
LIVEKIT_ERROR_LIMIT = 1_000_000
"""livekit's `max_unrecoverable_errors` for our sessions: out of reach, so that the decider's rule
(time and evidence) is the one that ends a call, not livekit's count of 3 failed requests."""


def late_reply_bound(settings: Any) -> float:
    """The longest a caller's turn can wait for its reply while a failing stage is ridden out: a
    stage fails at most `down_for` without a success before the call is ended, and the request
    that succeeds may start up to one probe wait late and spend every attempt but its last. A
    conversation driver (`simulate`, `call`) waits this long for a reply before it gives up."""
    attempts = settings.get("retry.max_retries") + 1
    return (
        settings.get("resilience.down_for")
        + settings.get("resilience.probe_max")
        + attempts * settings.get("http.timeout")
    )


@dataclass
class _Failing:
    """A stage failing since `since` (monotonic), with `requests` failed for good since then."""

    since: float
    requests: int = 0
    cause: BaseException | None = None


class Decider:
    def __init__(
        self,
        session: Any,
        ledger: FaultLedger,
        *,
        down_for: float,
        apology: str,
        apology_timeout: float,
        probe_initial: float = 1.0,
        probe_max: float = 4.0,
        hold_line: str = "",
        hold_after: float = 6.0,
        tts_breaker: Breaker | None = None,
        providers: Mapping[str, list[Any]] | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.session = session
        self.ledger = ledger
        self.down_for = down_for
        self.apology = apology
        self.apology_timeout = apology_timeout
        self.tts_breaker = tts_breaker
        self.clock = clock
        self.failing: dict[str, _Failing] = {}
        self.ending: asyncio.Task[None] | None = None
        self.tts_failed_last = False
        self._deadline: dict[str, asyncio.TimerHandle] = {}
        self.ride_out = RideOut(self, probe_initial, probe_max, hold_line, hold_after)
        session.on("error", self._on_error)
        session.on("user_input_transcribed", self._on_transcript)
        for stage in SUCCESS_OF_METRICS:
            # each provider's own metrics (a chain's members too): the session's metrics_collected
            # is deprecated and warns when listened to
            for provider in (providers or {}).get(stage, []):
                provider.on("metrics_collected", lambda _, stage=stage: self._success(stage))
        session.on("close", lambda _: self.stop())

    # -- evidence ---------------------------------------------------------------------------------
    def _on_transcript(self, ev: Any) -> None:
        # any transcript, interim too: the STT answers
        self._success("stt")

    def _success(self, stage: str) -> None:
        if stage == "tts":
            self.tts_failed_last = False
        failing = self.failing.pop(stage, None)
        self.ledger.failing.discard(stage)
        if (timer := self._deadline.pop(stage, None)) is not None:
            timer.cancel()
        if failing is not None and failing.requests:
            logger.info(
                "%s works again after %.1f s and %d failed request(s): the call goes on",
                stage,
                self.clock() - failing.since,
                failing.requests,
            )
        self.ride_out.stage_ok(stage)

    def _on_error(self, ev: Any) -> None:
        from handler.resilience.gate import refused

        error = getattr(ev, "error", ev)
        stage = STAGE_OF_ERROR.get(getattr(error, "type", ""))
        if stage is None or refused(error) or self.ending is not None:
            return
        failing = self.failing.get(stage)
        if failing is None:  # the first failure since the stage last worked starts the clock
            failing = self.failing[stage] = _Failing(self.clock())
            self.ledger.failing.add(stage)
            self.ride_out.stage_failing(stage)
            if self.down_for:
                loop = asyncio.get_running_loop()
                self._deadline[stage] = loop.call_later(self.down_for, self._check, stage)
        if getattr(error, "recoverable", True):
            return
        # a request failed for good: every attempt (and every provider of a chain) spent
        failing.requests += 1
        failing.cause = getattr(error, "error", error)
        if stage == "tts":
            self.tts_failed_last = True
        self._check(stage)
        if self.ending is None:
            self.ride_out.request_failed(stage, failing.requests)

    def _check(self, stage: str) -> None:
        """Decide if the stage is down for good: failing for `down_for`, with the evidence."""
        failing = self.failing.get(stage)
        if failing is None or not self.down_for or self.ending is not None:
            return
        if failing.requests < EVIDENCE or self.clock() - failing.since < self.down_for:
            return
        cause = failing.cause
        reason = f"{stage} is down: {type(cause).__name__}: {cause}"
        self.ending = asyncio.get_running_loop().create_task(self._end(stage, reason, failing))

    # -- the decision -----------------------------------------------------------------------------
    def tts_alive(self, stage: str) -> bool:
        if stage == "tts" or self.tts_failed_last:
            return False
        return self.tts_breaker is None or not self.tts_breaker.down

    async def _end(self, stage: str, reason: str, failing: _Failing) -> None:
        self.ride_out.cancel()
        self.ledger.ended = reason
        logger.error(
            "ending the session: %s (failing for %.1f s without a success, %d requests failed after "
            "every attempt)",
            reason,
            self.clock() - failing.since,
            failing.requests,
        )
        if self.apology and self.tts_alive(stage):
            try:
                handle = self.session.say(self.apology, allow_interruptions=False, add_to_chat_ctx=False)
                await asyncio.wait_for(handle.wait_for_playout(), self.apology_timeout)
                # a TTS that failed on the apology has been reported by its error event already;
                # collect the speech task's exception so asyncio does not log it again at exit
                for task in getattr(handle, "_tasks", []):
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        logger.warning("the apology could not be played: %s", task.exception())
            except Exception as e:  # the apology is a courtesy: the session ends regardless
                logger.warning("the apology could not be played: %s: %s", type(e).__name__, e)
        self.session.shutdown(drain=False)

    def stop(self) -> None:
        """The session closed: nothing more to decide or ride out (the decision's own task, when
        there is one, ends by closing the session)."""
        self.ride_out.cancel()
        for timer in self._deadline.values():
            timer.cancel()
        self._deadline.clear()


QUIET_WAIT = 60.0
"""Seconds a reply asked for again waits for the caller and the agent to be quiet, at most."""


HOLD_RECHECK = 0.25
"""Seconds between looks for a quiet moment to say the hold line in."""


class RideOut:
    """What the session does while a stage fails and is not (yet) down for good: a reply that
    failed for good is asked for again after the probe wait; the hold line, once, if the wait
    grows. The STT's part (keep and replay the utterance) is in `stt_guard`."""

    def __init__(
        self, decider: Decider, probe_initial: float, probe_max: float, hold_line: str, hold_after: float
    ) -> None:
        self.decider = decider
        self.session = decider.session
        self.probe_initial = probe_initial
        self.probe_max = probe_max
        self.hold_line = hold_line
        self.hold_after = hold_after
        self._retry: asyncio.Task[None] | None = None
        self._hold: asyncio.TimerHandle | None = None
        self._held = False
        """The hold line was said in this episode (reset when every stage works again)."""

    def wait(self, failed_requests: int) -> float:
        """Seconds before asking again after the n-th failed request: the breaker's schedule."""
        return min(self.probe_initial * 2 ** (failed_requests - 1), self.probe_max)

    def stage_failing(self, stage: str) -> None:
        if self.hold_line and self._hold is None and not self._held:
            self._hold = asyncio.get_running_loop().call_later(self.hold_after, self._say_hold)

    def stage_ok(self, stage: str) -> None:
        if not self.decider.failing:
            if self._hold is not None:
                self._hold.cancel()
                self._hold = None
            self._held = False

    def request_failed(self, stage: str, failed_requests: int) -> None:
        if stage in ("llm", "tts") and (self._retry is None or self._retry.done()):
            self._retry = asyncio.get_running_loop().create_task(self._ask_again(self.wait(failed_requests)))

    def cancel(self) -> None:
        if self._hold is not None:
            self._hold.cancel()
        if self._retry is not None and not self._retry.done():
            self._retry.cancel()

    def _unanswered(self) -> bool:
        """The conversation ends with the caller's message: no reply was heard after it."""
        items = [i for i in self.session.history.items if getattr(i, "type", None) == "message"]
        last = items[-1] if items else None
        if last is None:
            return False
        if last.role == "user":
            return True
        # a reply the TTS failed on before its first word is in the history with nothing heard
        heard = bool(last.text_content) or not getattr(last, "interrupted", False)
        return last.role == "assistant" and not heard

    async def _ask_again(self, wait: float) -> None:
        await asyncio.sleep(wait)
        # wait for a moment when nobody speaks: the caller may be talking, or a reply on its way
        # (which answers the caller's message as well as ours would); bounded like every wait
        deadline = self.decider.clock() + QUIET_WAIT
        while self.session.agent_state != "listening" or self.session.user_state == "speaking":
            if self.decider.clock() > deadline:
                return
            await asyncio.sleep(0.1)
        if not self._unanswered() or self.decider.ending is not None:
            return
        logger.warning("asking for the reply again: the last one failed for good")
        self.session.generate_reply()

    def _say_hold(self) -> None:
        self._hold = None
        failing = self.decider.failing
        if not failing or self.decider.ending is not None or self._held:
            return
        if "tts" in failing or not self.decider.tts_alive("llm"):
            return  # the hold line would meet the same failing TTS
        if self.session.agent_state != "listening" or self.session.user_state == "speaking":
            # a request in flight (thinking), or someone speaking: said would mean queued behind
            # it; look again shortly, while the stage still fails
            self._hold = asyncio.get_running_loop().call_later(HOLD_RECHECK, self._say_hold)
            return
        self._held = True
        logger.info("saying the hold line: %s failing for %.0f s", ",".join(failing), self.hold_after)
        self.session.say(self.hold_line, allow_interruptions=True, add_to_chat_ctx=False)
