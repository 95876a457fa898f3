"""The unmodified livekit plugins (openai, elevenlabs, soniox) against the local provider servers:
text/audio/transcripts arrive, counters count, and injected faults take the plugins' retry paths."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from conftest import tone
from livekit.agents import (
    APIConnectionError,
    APIConnectOptions,
    APIStatusError,
    APITimeoutError,
    llm,
    stt,
)
from livekit.agents.types import USERDATA_TIMED_TRANSCRIPT
from livekit.plugins import elevenlabs, openai, soniox

from handler.fakes import (
    ElevenLabsServer,
    Fault,
    LatencyProfile,
    OpenAIServer,
    SonioxServer,
)

FAST = APIConnectOptions(max_retry=2, retry_interval=0.05, timeout=0.5)
NO_RETRY = APIConnectOptions(max_retry=0, timeout=0.5)
SLOW_FAULT = APIConnectOptions(max_retry=2, retry_interval=0.05, timeout=2.0)
"""Retries like FAST, with a timeout a loaded machine's retried request stays far under."""
PATIENT = APIConnectOptions(max_retry=0, timeout=10.0)
"""For a request no fault should cut: a busy machine's scheduling is never mistaken for a stall."""


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


# -- OpenAI ------------------------------------------------------------------------------------
def chat_ctx(text: str = "hello there") -> llm.ChatContext:
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content=text)
    return ctx


async def complete(
    model: openai.LLM, conn: APIConnectOptions = FAST, text: str = "hello there"
) -> tuple[str, list[llm.ChatChunk]]:
    out, chunks = "", []
    async with model.chat(chat_ctx=chat_ctx(text), conn_options=conn) as stream:
        async for chunk in stream:
            chunks.append(chunk)
            if chunk.delta and chunk.delta.content:
                out += chunk.delta.content
    return out, chunks


async def test_openai_streams_reply_usage_and_reuses_connection() -> None:
    # a connect delay under FAST's 0.5 s timeout left a busy machine 0.2 s before the attempt
    # was cut and retried on a new connection; the second request had 0.3 s
    connect = 1.0
    async with OpenAIServer(api_key="test", profile=LatencyProfile(connect_delay=connect)) as srv:
        model = openai.LLM(base_url=srv.base_url, api_key="test")
        t0 = time.perf_counter()
        text, chunks = await complete(model, PATIENT)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        again, _ = await complete(model, PATIENT, text="and again")
        second = time.perf_counter() - t0
        await model.aclose()

    assert text == "You said: hello there."
    assert again == "You said: and again."
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[0].completion_tokens == 4
    assert srv.received[0][1]["stream"] is True
    assert srv.received[0][1]["stream_options"] == {"include_usage": True}
    # keep-alive: the SDK drains the body after [DONE], so one TCP connection serves both and
    # only the first request pays the connect delay
    assert srv.stats.connections == 1
    assert srv.stats.attempts("/chat/completions") == 2
    assert srv.stats.connect_paid == ["/v1/chat/completions"]
    assert first >= connect > second


async def test_openai_pluggable_responder_pacing_and_models() -> None:
    profile = LatencyProfile(first_byte=0.1, tokens_per_second=50)
    async with OpenAIServer(responder=lambda msgs: "one two three four five", profile=profile) as srv:
        model = openai.LLM(base_url=srv.base_url, api_key="x")
        t0 = time.perf_counter()
        text, _ = await complete(model)
        elapsed = time.perf_counter() - t0
        models = await model._client.models.list()  # what LLM.prewarm() calls
        await model.aclose()
    assert text == "one two three four five"
    assert elapsed >= 0.1 + 4 / 50
    assert "gpt-4.1" in [m.id for m in models.data]
    assert srv.stats.attempts("/models") == 1


@pytest.mark.parametrize(
    ("faults", "attempts", "connections"),
    [
        ([Fault.rate_limited(retry_after=0.1)], 2, 1),  # error responses keep the connection
        ([Fault.http(500), Fault.http(503)], 3, 1),  # fail twice, then succeed
        ([Fault.slow_first_byte(1.0)], 2, 2),  # read timeout: the client drops that socket
        ([Fault.disconnect(after=0)], 2, 2),
        ([Fault.malformed(after=0)], 2, 2),
        ([Fault.error(503, after=0)], 2, 2),
    ],
    ids=["429", "500-503", "slow-first-byte", "disconnect", "malformed", "in-band-error"],
)
async def test_openai_retryable_faults_then_success(
    faults: list[Fault], attempts: int, connections: int
) -> None:
    async with OpenAIServer(faults=faults) as srv:
        model = openai.LLM(base_url=srv.base_url, api_key="test")
        text, _ = await complete(model, FAST)
        await model.aclose()
    assert text == "You said: hello there."
    assert srv.stats.attempts("/chat/completions") == attempts
    assert srv.stats.connections == connections
    assert len(srv.faults) == 0


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.http(400), APIStatusError),
        (Fault.http(401), APIStatusError),
        # once content has streamed the plugin marks errors non-retryable
        (Fault.stall(2.0, after=2), APITimeoutError),
        (Fault.disconnect(after=2), APIConnectionError),
        (Fault.malformed(after=1), APIConnectionError),
    ],
    ids=["400", "401", "stall-after-content", "disconnect-after-content", "malformed-after"],
)
async def test_openai_non_retryable_faults(fault: Fault, error: type[Exception]) -> None:
    async with OpenAIServer(faults=[fault]) as srv:
        model = openai.LLM(base_url=srv.base_url, api_key="test")
        with pytest.raises(error) as info:
            await complete(model, FAST)
        await model.aclose()
    assert srv.stats.attempts("/chat/completions") == 1
    if fault.kind == "status":
        assert isinstance(info.value, APIStatusError)
        assert info.value.status_code == fault.status and not info.value.retryable


async def test_openai_wrong_key_and_exhausted_retries() -> None:
    async with OpenAIServer(api_key="right", faults=[Fault.http(503)] * 3) as srv:
        bad = openai.LLM(base_url=srv.base_url, api_key="wrong")
        with pytest.raises(APIStatusError) as info:
            await complete(bad, FAST)
        assert info.value.status_code == 401
        good = openai.LLM(base_url=srv.base_url, api_key="right")
        with pytest.raises(APIConnectionError, match="after 3 attempts"):
            await complete(good, FAST)
        await bad.aclose()
        await good.aclose()
    assert srv.stats.attempts("/chat/completions") == 4


# -- ElevenLabs --------------------------------------------------------------------------------
def make_tts(srv: ElevenLabsServer, session: aiohttp.ClientSession, key: str = "k") -> elevenlabs.TTS:
    return elevenlabs.TTS(base_url=srv.base_url, api_key=key, http_session=session, encoding="pcm_22050")


async def stream_tts(
    tts: elevenlabs.TTS, text: str, conn: APIConnectOptions = FAST
) -> tuple[float, list[str]]:
    """Seconds of audio and the aligned words for `text`."""
    seconds, words = 0.0, []
    async with tts.stream(conn_options=conn) as stream:
        stream.push_text(text)
        stream.end_input()
        async for ev in stream:
            assert ev.frame.sample_rate == 22050
            seconds += ev.frame.duration
            words += [str(w) for w in ev.frame.userdata.get(USERDATA_TIMED_TRANSCRIPT, [])]
    return seconds, words


async def test_elevenlabs_stream_reuses_one_websocket(session: aiohttp.ClientSession) -> None:
    async with ElevenLabsServer(api_key="k") as srv:
        tts = make_tts(srv, session)
        short, words = await stream_tts(tts, "Hello there. ")
        long, _ = await stream_tts(tts, "Hello there, this is a much longer sentence to speak. ")
        await tts.aclose()
    assert short > 0.5 and long > 2 * short  # duration follows text length
    assert "".join(words).split() == ["Hello", "there."]  # sync_alignment timestamps
    assert srv.stats.ws_sessions == 1 and srv.stats.events["contexts"] == 2
    assert srv.stats.connections == 1
    sent = [m for _, m in srv.received]
    assert {"context_id", "close_context"} <= set(sent[-1])


@pytest.mark.parametrize(
    "faults",
    [[], [Fault.rate_limited(0.1)], [Fault.malformed(), Fault.disconnect(after=0)]],
    ids=["ok", "429", "non-audio-then-disconnect"],
)
async def test_elevenlabs_http_synthesize_and_audio_hook(
    session: aiohttp.ClientSession, faults: list[Fault]
) -> None:
    seen: list[tuple[str, int]] = []

    def audio(text: str, rate: int) -> bytes:
        seen.append((text, rate))
        return b"\x10\x00" * rate  # one second

    async with ElevenLabsServer(audio_for_text=audio, faults=faults) as srv:
        tts = make_tts(srv, session)
        frames = [ev.frame async for ev in tts.synthesize("Hi.", conn_options=FAST)]
        await tts.aclose()
    assert seen[-1] == ("Hi.", 22050)
    assert sum(f.duration for f in frames) == pytest.approx(1.0, abs=0.02)
    assert srv.stats.attempts("/stream") == len(faults) + 1


@pytest.mark.parametrize(
    ("faults", "handshakes", "ws_sessions", "contexts"),
    [
        ([Fault.http(503)], 2, 1, 1),  # handshake rejected, retried
        ([Fault.slow_first_byte(4.0)], 1, 1, 2),  # context times out, retried on the same socket
        ([Fault.error(500)], 1, 1, 2),  # in-band error for the context
        ([Fault.disconnect(after=0)], 2, 2, 2),  # socket dropped: reconnect
        ([Fault.malformed(after=0)], 2, 2, 2),  # non-JSON frame kills the plugin's recv loop
    ],
    ids=["handshake-503", "slow-first-audio", "in-band-error", "disconnect", "malformed"],
)
async def test_elevenlabs_faults_then_success(
    session: aiohttp.ClientSession,
    faults: list[Fault],
    handshakes: int,
    ws_sessions: int,
    contexts: int,
) -> None:
    async with ElevenLabsServer(faults=faults) as srv:
        tts = make_tts(srv, session)
        # a 2 s timeout under the slow fault's 4 s: the retried context's first audio never comes
        # near it, however busy the machine (0.5 s did, once: a third context)
        seconds, _ = await stream_tts(tts, "Hello there. ", SLOW_FAULT)
        await tts.aclose()
    assert seconds > 0.5
    assert srv.stats.attempts("/multi-stream-input") == handshakes
    assert srv.stats.ws_sessions == ws_sessions
    assert srv.stats.events["contexts"] == contexts
    assert len(srv.faults) == 0


async def test_elevenlabs_bad_key_not_retried(session: aiohttp.ClientSession) -> None:
    async with ElevenLabsServer(api_key="right") as srv:
        tts = make_tts(srv, session, key="wrong")
        with pytest.raises(APIStatusError) as info:
            await stream_tts(tts, "Hello. ")
        await tts.aclose()
    assert info.value.status_code == 401
    assert srv.stats.attempts("/multi-stream-input") == 1 and srv.stats.ws_sessions == 0


async def test_elevenlabs_realtime_pacing(session: aiohttp.ClientSession) -> None:
    profile = LatencyProfile(first_byte=0.2, realtime_factor=1.0)
    async with ElevenLabsServer(profile=profile, audio_for_text=lambda t, r: bytes(r)) as srv:
        tts = make_tts(srv, session)  # bytes(r): 0.5 s of silence per flush
        t0 = time.perf_counter()
        seconds, _ = await stream_tts(tts, "Hi. ")
        elapsed = time.perf_counter() - t0
        await tts.aclose()
    assert seconds == pytest.approx(0.5, abs=0.02)
    assert elapsed >= 0.2 + 0.4  # first byte + paced audio (the last chunk's pause overlaps)


# -- Soniox ------------------------------------------------------------------------------------
def push_utterance(stream: stt.SpeechStream, speech: float = 0.6, silence: float = 0.8) -> None:
    for frame in tone(speech):
        stream.push_frame(frame)
    for frame in tone(silence, amplitude=0.0):
        stream.push_frame(frame)


async def events_until_final(
    stream: stt.SpeechStream, finals: int = 1, timeout: float = 3.0
) -> list[stt.SpeechEvent]:
    events: list[stt.SpeechEvent] = []

    async def read() -> None:
        async for ev in stream:
            events.append(ev)
            if sum(e.type == stt.SpeechEventType.END_OF_SPEECH for e in events) == finals:
                return

    await asyncio.wait_for(read(), timeout)
    return events


def make_stt(srv: SonioxServer, session: aiohttp.ClientSession, key: str = "k") -> soniox.STT:
    return soniox.STT(base_url=srv.base_url, api_key=key, http_session=session)


async def test_soniox_utterance_events_and_recognizer(session: aiohttp.ClientSession) -> None:
    heard: list[int] = []

    def recognizer(pcm_16k: bytes) -> str:
        heard.append(len(pcm_16k))
        return "turn on the lights"

    async with SonioxServer(api_key="k", recognizer=recognizer) as srv:
        stream = make_stt(srv, session).stream(conn_options=FAST)
        push_utterance(stream)
        push_utterance(stream, speech=0.4)
        events = await events_until_final(stream, finals=2)
        await stream.aclose()

    types = [e.type for e in events if e.type != stt.SpeechEventType.RECOGNITION_USAGE]
    S = stt.SpeechEventType
    assert types[:2] == [S.START_OF_SPEECH, S.INTERIM_TRANSCRIPT]
    assert types.count(S.START_OF_SPEECH) == 2 and types.count(S.FINAL_TRANSCRIPT) == 2
    finals = [e.alternatives[0] for e in events if e.type == S.FINAL_TRANSCRIPT]
    assert [f.text for f in finals] == ["turn on the lights"] * 2
    assert finals[0].end_time <= 0.7 and finals[1].start_time >= 1.3  # audio-clock timestamps
    assert srv.transcripts == ["turn on the lights"] * 2
    # the final utterance audio (16 kHz s16le) is the speech plus pre-roll and tail, not silence
    assert 0.6 <= heard[-2] / 32000 <= 1.0
    assert srv.received[0][1]["audio_format"] == "pcm_s16le"
    assert srv.stats.ws_sessions == 1 and srv.stats.events["utterances"] == 2


@pytest.mark.parametrize(
    "fault", [Fault.http(503), Fault.slow_first_byte(1.0)], ids=["handshake-503", "slow-handshake"]
)
async def test_soniox_connect_fault_retried(session: aiohttp.ClientSession, fault: Fault) -> None:
    async with SonioxServer(faults=[fault]) as srv:
        stream = make_stt(srv, session).stream(conn_options=FAST)
        push_utterance(stream)
        events = await events_until_final(stream)
        await stream.aclose()
    finals = [e.alternatives[0].text for e in events if e.type == stt.SpeechEventType.FINAL_TRANSCRIPT]
    assert finals == ["hello"]
    assert srv.stats.attempts("/transcribe-websocket") == 2 and srv.stats.ws_sessions == 1


@pytest.mark.parametrize(
    "fault",
    [Fault.error(503, after=0), Fault.disconnect(after=0)],
    ids=["in-band-503", "disconnect"],
)
async def test_soniox_session_fault_reconnects(session: aiohttp.ClientSession, fault: Fault) -> None:
    # audio already sent on the failed session is lost, so speak again once reconnected
    async with SonioxServer(faults=[fault]) as srv:
        stream = make_stt(srv, session).stream(conn_options=FAST)
        push_utterance(stream)
        for _ in range(100):
            if srv.stats.ws_sessions == 2:
                break
            await asyncio.sleep(0.02)
        push_utterance(stream)
        events = await events_until_final(stream)
        await stream.aclose()
    assert srv.stats.ws_sessions == 2
    assert stt.SpeechEventType.FINAL_TRANSCRIPT in [e.type for e in events]


async def test_soniox_bad_key_not_retried(session: aiohttp.ClientSession) -> None:
    async with SonioxServer(api_key="right") as srv:
        stream = make_stt(srv, session, key="wrong").stream(conn_options=FAST)
        push_utterance(stream)
        with pytest.raises(APIStatusError) as info:
            await events_until_final(stream)
        await stream.aclose()
    assert info.value.status_code == 401
    assert srv.stats.attempts("/transcribe-websocket") == 1


async def test_soniox_raw_protocol_finalize_and_end_of_stream(
    session: aiohttp.ClientSession,
) -> None:
    """The parts of the protocol the plugin does not use: finalize and the empty end frame."""
    speech = b"".join(f.data.tobytes() for f in tone(0.4))
    async with SonioxServer() as srv, session.ws_connect(srv.base_url) as ws:
        await ws.send_json({"api_key": "k", "audio_format": "pcm_s16le", "sample_rate": 16000})
        await ws.send_bytes(speech)
        await ws.send_str('{"type": "finalize"}')
        await ws.send_bytes(b"")
        messages = [msg.json() async for msg in ws if msg.type == aiohttp.WSMsgType.TEXT]
    texts = ["".join(t["text"] for t in m["tokens"]) for m in messages]
    assert texts[-3:] == ["hello", "<fin>", ""]
    assert messages[-1]["finished"] is True
    assert messages[-1]["total_audio_proc_ms"] == pytest.approx(400, abs=20)
