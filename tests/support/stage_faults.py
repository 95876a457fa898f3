"""One request through one stage, built exactly as a session builds it, against a fake server that
injects a fault: what the fault costs and whether the request was answered.

`fallback.build` gives the real livekit plugin behind the resilience layer (and a
FallbackAdapter over [cloud, local] when chained); the request is a chat (LLM), a streamed
synthesis (TTS) or one recognized utterance (STT). Used by tests/test_fault_matrix.py and
measurements/faults.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import llm, stt

from handler.fakes._base import Fault, ProviderServer
from handler.plan import resolve
from handler.resilience import fallback
from handler.resilience.ledger import FaultLedger, StageFaults
from handler.resilience.stages import watch
from handler.sim import cloudsim

PHRASE = "thank you very much"
PATHS = {"llm": "/chat/completions", "tts": "/multi-stream-input", "stt": "/transcribe-websocket"}
HANG = 60.0
"""A request still running after this long is a hang (raised as AssertionError)."""

FAULTS: dict[str, Callable[[], list[Fault]]] = {
    "429": lambda: [Fault.rate_limited(0.3)],
    "500": lambda: [Fault.http(500)],
    "503": lambda: [Fault.http(503)],
    "stall": lambda: [Fault.stall(30.0, after=1)],
    "disconnect": lambda: [Fault.disconnect(after=1)],
    "malformed": lambda: [Fault.malformed(after=1)],
    "late_first_byte": lambda: [Fault.slow_first_byte(30.0)],
    "down": lambda: [],  # the server is stopped: every connection refused
}
"""Each fault once (the request's first attempt meets it), or the provider down for the call."""


@dataclass
class Outcome:
    answered: str
    """What came back ("" when nothing did): the transcript, the reply, or "N.N s of audio"."""
    error: BaseException | None
    elapsed: float
    """Seconds from the request (STT: the end of the user's speech) to its end."""
    first_output: float | None
    """Seconds to the first useful output: final transcript (STT, from the end of speech), first
    token (LLM), first audio (TTS)."""
    faults: StageFaults
    attempts: int
    requests: list[int] = field(default_factory=list)
    """STT: the failed attempts of each request that failed for good, in order."""


def attempts(stage: str, srv: ProviderServer) -> int:
    """What the provider saw of the request: connections (STT, LLM); for the TTS, whose contexts
    share one socket, synthesis contexts or handshakes, whichever is more."""
    seen = srv.stats.attempts(PATHS[stage])
    return max(seen, srv.stats.events["contexts"]) if stage == "tts" else seen


_speech: np.ndarray | None = None
LEAD_IN = 0.2


def speech_frames() -> list[rtc.AudioFrame]:
    """PHRASE spoken by espeak-ng at 16 kHz after 0.2 s of silence, then 1 s of silence, 10 ms frames."""
    global _speech
    if _speech is None:
        from handler_plugins.engines.espeak_tts import synthesize

        pcm, _ = synthesize(PHRASE, voice="en-us", rate=175, sample_rate=16000)
        lead, tail = np.zeros(int(LEAD_IN * 16000), np.int16), np.zeros(16000, np.int16)
        _speech = np.concatenate([lead, pcm.astype(np.int16), tail])
    step = 160
    return [
        rtc.AudioFrame(_speech[i : i + step].tobytes(), 16000, 1, step)
        for i in range(0, len(_speech) - step, step)
    ]


async def stage_request(
    stage: str,
    srv: ProviderServer,
    settings: Any,
    registry: Any,
    *,
    chained: bool,
    pace: float = 0.0,
    base_url: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    ride_out: bool = False,
) -> Outcome:
    """One request through `stage`; `pace` 1.0 feeds the STT's audio in real time (0: at once).
    The STT's request ends when it failed for good, or with `ride_out` only once it is answered
    (the utterance as a session hears it, through every request and probe of a burst)."""
    chain = {f"{stage}.fallback": [cloudsim.CLOUD[stage], "local"]} if chained else {}
    settings = settings.with_overrides(
        {
            "http.prewarm": False,
            cloudsim.BASE_URL[stage]: base_url or srv.base_url,  # type: ignore[attr-defined]
            "stt.local.phrases": [PHRASE],
            **chain,
            **(overrides or {}),
        },
        "stage request",
    )
    plan = resolve(settings, registry)
    runtime = plan.runtime(pooled=True)
    ledger = FaultLedger()
    members: dict[str, list[Any]] = {}
    vad = plan.build("vad", runtime) if stage == "stt" and chained else None
    instance = fallback.build(plan, stage, runtime, vad=vad, ledger=ledger, members=members)
    watch({stage: instance}, members, ledger)
    conn = fallback.session_conn_options(instance, runtime)
    clock = _Clock()
    answered, error = "", None
    requests: list[int] = []
    try:
        async with asyncio.timeout(HANG):
            if stage == "llm":
                answered = await _chat(instance, conn, clock)
            elif stage == "tts":
                answered = await _speak(instance, conn, clock)
            else:
                answered = await _recognize(instance, conn, pace, clock, requests, ride_out)
    except TimeoutError:
        raise AssertionError(f"{stage}: the request hung for {HANG} s") from None
    except Exception as e:
        error = e
    finally:
        elapsed = time.monotonic() - clock.start
        await instance.aclose()
    await asyncio.sleep(0.05)  # let the last error events land on the ledger
    return Outcome(
        answered, error, elapsed, clock.first, ledger.totals()[stage], attempts(stage, srv), requests
    )


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.first: float | None = None

    def output(self) -> None:
        if self.first is None:
            self.first = time.monotonic() - self.start


async def _chat(instance: Any, conn: Any, clock: _Clock) -> str:
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content=PHRASE)
    text = ""
    async with instance.chat(chat_ctx=ctx, conn_options=conn) as reply:
        async for chunk in reply:
            if chunk.delta and chunk.delta.content:
                clock.output()
                text += chunk.delta.content
    return text


async def _speak(instance: Any, conn: Any, clock: _Clock) -> str:
    seconds = 0.0
    async with instance.stream(conn_options=conn) as synthesis:
        synthesis.push_text("Hello there, how are you today? ")
        synthesis.end_input()
        async for ev in synthesis:
            clock.output()
            seconds += ev.frame.duration
    return f"{seconds:.1f} s of audio" if seconds > 0 else ""


async def _recognize(
    instance: Any, conn: Any, pace: float, clock: _Clock, requests: list[int], ride_out: bool
) -> str:
    recognition = instance.stream(conn_options=conn)
    frames = speech_frames()

    async def feed() -> None:
        for frame in frames:
            recognition.push_frame(frame)
            if pace:
                await asyncio.sleep(frame.duration * pace)

    # a stage alone does not raise when a request failed for good: it reports it (an
    # unrecoverable error event) and rides the failure out for the session's decider; here the
    # request ends there
    failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    retried = [0]

    def on_error(ev: Any) -> None:
        if ev.recoverable:
            retried[0] += 1
            return
        requests.append(retried[0] + 1)
        retried[0] = 0
        if not ride_out and not failed.done():
            failed.set_result(ev.error)

    async def transcript() -> str:
        async for ev in recognition:
            if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT and ev.alternatives[0].text.strip():
                clock.output()
                return ev.alternatives[0].text
        return ""

    instance.on("error", on_error)
    feeding = asyncio.create_task(feed())
    hearing = asyncio.create_task(transcript())
    if pace:  # timed from the end of the user's speech (the last voiced frame), as time to first audio is
        clock.start += (len(frames) * 0.01 - 1.0) * pace
    try:
        await asyncio.wait({hearing, failed}, return_when=asyncio.FIRST_COMPLETED)
        if hearing.done():
            return hearing.result()
        raise failed.result()
    finally:
        instance.off("error", on_error)
        feeding.cancel()
        hearing.cancel()
        await recognition.aclose()


# ------------------------------------------------------------------------------ a burst in a call

BURSTS: dict[str, Callable[[], Fault]] = {
    "429": lambda: Fault.rate_limited(0.3),
    "500": lambda: Fault.http(500),
    "503": lambda: Fault.http(503),
    "slow": lambda: Fault.slow_first_byte(6.0),
}
"""What one failed request of a burst meets: an error status (429 with Retry-After), or a
handshake / first byte held back for 6 s (past HTTP_TIMEOUT 2 s: each one a timeout)."""


@dataclass
class BurstCall:
    """A simulated call (`handler.sim`) over the cloud fakes with a burst on one stage."""

    report: Any
    """The simulator's `Report`."""
    elapsed: float
    attempts: int
    """Requests (STT: handshakes) the faulty provider saw during the call."""
    burst_at: float | None
    """Seconds into the call the burst began (None: never reached)."""
    spoken: list[str]
    """What the TTS was asked to say: the replies, and the apology if one was said."""
    faulted: int
    """Requests that met the burst's fault."""

    @property
    def answered(self) -> int:
        return sum(1 for t in self.report.turns if t.kind == "turn" and t.reply_text)


async def burst_call(
    stage: str,
    fault: str,
    count: int,
    *,
    mid_call: bool,
    settings: Any,
    registry: Any,
    scenario: Any,
) -> BurstCall:
    """Run `scenario` over the cloud fakes; `count` consecutive requests of `stage` meet
    `BURSTS[fault]` ("down": every request refused with 503 for the rest of the call; "none":
    nothing happens), from the call's start or from the moment the first reply starts playing
    (`mid_call`: once it has been synthesized; the provider also drops its open connections
    then, as a failing service does)."""
    from handler.sim import runner

    async with cloudsim.running(settings, registry, scenario.recognizer_phrases()) as (cloud, fakes):
        srv: ProviderServer = getattr(fakes, stage)
        started = time.monotonic()
        at: list[float] = []

        def begin() -> None:
            at.append(time.monotonic() - started)
            if fault == "none":
                return
            if fault == "down":
                srv.faults.push(*[Fault.http(503) for _ in range(1000)])
            else:
                srv.faults.push(*[BURSTS[fault]() for _ in range(count)])
            if mid_call:
                srv.drop_connections()

        async def after_first_reply() -> None:
            # once the first reply has been synthesized whole (its TTS context ended): the burst
            # then meets the next requests, not the audio of a reply already on its way
            for _ in range(600):
                if fakes.tts.stats.events["finals"]:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # the client takes the context's end
            begin()

        waiting: list[asyncio.Task[None]] = []

        def progress(line: str) -> None:
            if mid_call and not waiting and line.startswith("turn 1:"):
                waiting.append(asyncio.get_running_loop().create_task(after_first_reply()))

        if not mid_call:
            begin()
        report, _ = await runner.simulate(cloud, registry, scenario, progress)
        elapsed = time.monotonic() - started
        return BurstCall(
            report,
            elapsed,
            attempts(stage, srv),
            at[0] if at else None,
            fakes.tts.spoken(),
            len(srv.faults.applied),
        )
