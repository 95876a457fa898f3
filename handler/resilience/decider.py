"""A stage that keeps failing ends the call with a decision, not a hang.

livekit closes a session only after `max_unrecoverable_errors` (3) consecutive unrecoverable
errors of one stage, and its STT pipeline recreates a failed stream every 0.5 s meanwhile; the
caller hears nothing of it. The decider counts the requests of each stage that failed for good
(every attempt and every provider of its chain spent), resets the count when the stage works
again (a transcript, the agent speaking), and once `resilience.down_after` requests in a row have
failed it decides: one ERROR line saying which stage is down and why, the configured apology when
the TTS still works, then the session is shut down. The reason is kept on the fault ledger
(`FaultLedger.ended`) for `simulate` (exit status 1) and the worker (the job ends).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from handler.resilience.breaker import Breaker
    from handler.resilience.ledger import FaultLedger

logger = logging.getLogger("handler.resilience")

STAGE_OF_ERROR = {"stt_error": "stt", "llm_error": "llm", "tts_error": "tts"}


class Decider:
    def __init__(
        self,
        session: Any,
        ledger: FaultLedger,
        *,
        down_after: int,
        apology: str,
        apology_timeout: float,
        tts_breaker: Breaker | None = None,
    ) -> None:
        self.session = session
        self.ledger = ledger
        self.down_after = down_after
        self.apology = apology
        self.apology_timeout = apology_timeout
        self.tts_breaker = tts_breaker
        self.failed: Counter[str] = Counter()
        self.ending: asyncio.Task[None] | None = None
        self.tts_failed_last = False
        session.on("error", self._on_error)
        session.on("user_input_transcribed", self._on_transcript)
        session.on("agent_state_changed", self._on_agent_state)

    def _on_transcript(self, ev: Any) -> None:
        if getattr(ev, "is_final", False):
            self.failed["stt"] = 0

    def _on_agent_state(self, ev: Any) -> None:
        if getattr(ev, "new_state", None) == "speaking":
            self.failed["llm"] = self.failed["tts"] = 0
            self.tts_failed_last = False

    def _on_error(self, ev: Any) -> None:
        error = getattr(ev, "error", ev)
        if getattr(error, "recoverable", True):
            return
        stage = STAGE_OF_ERROR.get(getattr(error, "type", ""))
        if stage is None:
            return
        if stage == "tts":
            self.tts_failed_last = True
        self.failed[stage] += 1
        if self.down_after and self.failed[stage] >= self.down_after and self.ending is None:
            cause = getattr(error, "error", error)
            reason = f"{stage} is down: {type(cause).__name__}: {cause}"
            self.ending = asyncio.get_running_loop().create_task(self._end(stage, reason))

    def tts_alive(self, stage: str) -> bool:
        if stage == "tts" or self.tts_failed_last:
            return False
        return self.tts_breaker is None or not self.tts_breaker.down

    async def _end(self, stage: str, reason: str) -> None:
        self.ledger.ended = reason
        logger.error(
            "ending the session: %s (%d requests in a row failed after every attempt)",
            reason,
            self.failed[stage],
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

    async def aclose(self) -> None:
        if self.ending is not None and not self.ending.done():
            self.ending.cancel()
