"""Turn handling with exact counts: a real AgentSession (built by `build_session`, followed by the
turn tracker) driven by a scripted VAD and STT, with explicit speech durations and transcripts,
and the offline LLM and TTS. What the VAD reports is dictated, so the counts do not depend on how
audio falls against the VAD's windows or on the machine's load; every time the test waits is at
least 0.5 s away from the livekit timer it relies on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from scripted_components import Scripted

from handler import config
from handler.pipeline.http import close_shared_session
from handler.pipeline.session import build_session, make_runtime, min_interruption_duration, observed
from handler.pipeline.turns import LINE_FIELDS, TurnRecord, from_line, to_line
from handler.registry import Registry
from handler.sim.io import Clock, RealtimeSink, ScriptedInput

REPLY = (
    "Once upon a time a small robot learned to listen. It listened to the wind and to the rain, "
    "and to the people around it, every single day."
)
"""About 8 s of espeak speech: long enough for everything a test does during it."""
WARMUP = 3.0
"""livekit ignores the user for this long after the agent first speaks (echo cancellation
warm-up), then lets voice activity interrupt for the rest of the reply."""


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


async def converse(
    overrides: dict[str, Any], script: Callable[[Scripted, Any, RealtimeSink], Awaitable[None]]
) -> tuple[list[TurnRecord], Scripted, Any]:
    plugin = Scripted()
    registry = Registry.load()
    registry.add(plugin, name="scripted", origin="test")
    registry.collect()
    settings = config.load("dev").with_overrides(
        {
            "vad.provider": "scripted",
            "stt.provider": "scripted",
            "llm.local.replies": [
                {"pattern": "story", "reply": REPLY},
                {"pattern": "order", "reply": "Your order shipped yesterday and arrives tomorrow."},
            ],
            "turn.aec_warmup_duration": WARMUP,
            **overrides,
        },
        "test",
    )
    runtime = make_runtime(settings, registry)
    session, agent = build_session(settings, registry, runtime)
    clock = Clock()
    session.input.audio = ScriptedInput(clock)
    sink = RealtimeSink(clock)
    session.output.audio = sink
    try:
        async with observed(session, settings, registry, {"test": "turn-handling"}) as tracker:
            await session.start(agent=agent)
            await script(plugin, session, sink)
            # the last reply played to its end, then the session is left
            await until(lambda: session.agent_state == "listening" and not sink.speaking)
            records = tracker.records
    finally:
        await session.aclose()
        await sink.aclose()
        await close_shared_session()
    return records, plugin, settings


async def says(plugin: Scripted, text: str, speech: float = 1.0) -> None:
    await plugin.vad.utterance(speech)
    plugin.stt.say(text)


async def reply_started(session: Any, sink: RealtimeSink) -> None:
    await until(lambda: session.agent_state == "speaking" and sink.speaking)


@pytest.mark.realtime
@pytest.mark.parametrize("threshold,pauses", [(0.3, True), (0.9, False)])
async def test_wordless_speech_pauses_the_reply_once_only_above_the_interruption_threshold(
    threshold: float, pauses: bool
) -> None:
    reported = 0.6  # the VAD counts 0.1 s of speech plus the 0.5 s of silence that ends it

    async def script(plugin: Scripted, session: Any, sink: RealtimeSink) -> None:
        await says(plugin, "tell me a story")
        await reply_started(session, sink)
        await asyncio.sleep(WARMUP + 1.0)
        await plugin.vad.utterance(speech=0.1, silence=0.5)  # no transcript: fillers only

    records, plugin, settings = await converse(
        {"turn.interruption_threshold": threshold, "turn.false_interruption_timeout": 1.0}, script
    )
    # 0.5 * 0.3 / 0.5 = 0.3 s needed (0.6 reported); 0.5 * 0.9 / 0.5 = 0.9 s needed: 0.3 s either way
    assert (min_interruption_duration(settings) < reported) is pauses
    (story,) = records
    assert story.user_text == "tell me a story" and story.reply_text == REPLY
    assert story.false_interruptions == (1 if pauses else 0)
    assert not story.interrupted  # paused at most, then resumed to the end
    assert plugin.records == records  # the observers got the same records through the hook


@pytest.mark.realtime
async def test_words_during_a_reply_interrupt_it_and_are_answered_as_the_next_turn() -> None:
    async def script(plugin: Scripted, session: Any, sink: RealtimeSink) -> None:
        await says(plugin, "tell me a story")
        await reply_started(session, sink)
        await asyncio.sleep(WARMUP + 1.0)
        await says(plugin, "where is my order")
        await until(lambda: len(sink.play_starts) >= 2)  # the second reply started

    records, plugin, _ = await converse({}, script)
    story, order = records
    assert story.interrupted and story.false_interruptions == 0
    assert story.reply_text  # (the whole text: this sink keeps no word timing to cut it at)
    assert order.user_text == "where is my order" and "shipped" in order.reply_text
    assert not order.interrupted and order.answered
    (summary,) = plugin.summaries
    counts = (summary.turns, summary.answered, summary.interruptions, summary.false_interruptions)
    assert counts == (2, 2, 1, 0)
    for record in records:
        assert record.ttfa is not None and record.ttfa > record.end_of_turn_delay > 0
        # the turn line carries the record: read back, the same numbers (to the millisecond)
        back, bad = from_line(to_line(record))
        assert bad == 0
        for f in LINE_FIELDS:
            mine, theirs = getattr(record, f.attr), getattr(back, f.attr)
            assert theirs == (round(mine * 1000) / 1000 if f.kind == "ms" and mine is not None else mine), f
