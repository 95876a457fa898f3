"""What brings the first audio sooner: Soniox's manual finalization on livekit's flush (our soniox
provider, the real plugin, against the local Soniox server) and the TTS's first phrase
(`tts.elevenlabs.first_phrase_words`, the real elevenlabs plugin against the local server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from conftest import tone
from livekit.agents import APIConnectOptions, stt, tokenize

from handler.fakes import ElevenLabsServer, SonioxServer
from handler.pipeline.first_phrase import FirstPhraseTokenizer, first_phrase_end
from handler.pipeline.runtime import Runtime
from handler.sim import cloudsim

FAST = APIConnectOptions(max_retry=0, timeout=2.0)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def build(stage: str, overrides: dict[str, Any], session: aiohttp.ClientSession) -> Any:
    """The stage's provider as production builds it, pointed at a local server."""
    settings, registry = cloudsim.load_checked("production", overrides, "test")
    return registry.build(stage, settings, Runtime(settings, session, FAST))


# ------------------------------------------------------------------------------ Soniox finalize


async def finals_after_flush(
    stream: stt.RecognizeStream, speech: float, silence: float, wait: float
) -> list[str]:
    """Speak, fall silent, flush (what livekit does at the VAD's end of speech); the final texts
    that arrive within `wait` seconds."""
    for frame in tone(speech):
        stream.push_frame(frame)
    for frame in tone(silence, amplitude=0.0):
        stream.push_frame(frame)
    stream.flush()
    finals: list[str] = []

    async def read() -> None:
        async for ev in stream:
            if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                finals.append(ev.alternatives[0].text)
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(read(), wait)
    return finals


async def test_a_flush_finalizes_the_utterance_before_sonioxs_own_endpoint(
    session: aiohttp.ClientSession,
) -> None:
    # the server's own endpoint needs 3 s of silence and only 0.3 s follow the speech: the final
    # transcript can only come from the finalize the flush sends
    async with SonioxServer(recognizer=lambda pcm: "when do you open", endpoint_silence=3.0) as srv:
        soniox = build("stt", {"stt.soniox.base_url": srv.base_url}, session)
        assert soniox.capabilities.manual_flush  # what makes livekit flush at the VAD's end of speech
        stream = soniox.stream(conn_options=FAST)
        finals = await finals_after_flush(stream, speech=0.6, silence=0.3, wait=5.0)
        await stream.aclose()
    assert finals == ["when do you open"]
    assert srv.stats.events["finalizes"] == 1 and srv.stats.events["utterances"] == 1
    assert {"type": "finalize"} not in [m for _, m in srv.received]  # the config is the only JSON logged


async def test_without_manual_finalization_the_flush_sends_nothing(session: aiohttp.ClientSession) -> None:
    async with SonioxServer(recognizer=lambda pcm: "when do you open", endpoint_silence=3.0) as srv:
        soniox = build(
            "stt", {"stt.soniox.base_url": srv.base_url, "stt.soniox.manual_finalization": False}, session
        )
        assert not soniox.capabilities.manual_flush  # livekit would not flush it either
        stream = soniox.stream(conn_options=FAST)
        finals = await finals_after_flush(stream, speech=0.6, silence=0.3, wait=1.0)
        await stream.aclose()
    assert finals == [] and srv.stats.events["finalizes"] == 0


async def test_the_server_answers_a_finalize_with_nothing_pending_by_fin_alone(
    session: aiohttp.ClientSession,
) -> None:
    async with SonioxServer() as srv, session.ws_connect(srv.base_url) as ws:
        await ws.send_json({"api_key": "k", "audio_format": "pcm_s16le", "sample_rate": 16000})
        await ws.send_bytes(bytes(3200))  # silence only
        await ws.send_str('{"type": "finalize", "trailing_silence_ms": 100}')
        await ws.send_bytes(b"")
        messages = [msg.json() async for msg in ws if msg.type == aiohttp.WSMsgType.TEXT]
    tokens = [t for m in messages for t in m["tokens"]]
    assert tokens == [{"text": "<fin>", "is_final": True, "start_ms": 0, "end_ms": 0, "confidence": 1.0}]
    assert srv.stats.events["finalizes"] == 1 and srv.stats.events["utterances"] == 0


def test_manual_finalization_must_be_a_boolean(cli, planted: dict[str, str]) -> None:
    out = cli(
        "config", "check", "--env", "production", env={"HANDLER_STT__SONIOX__MANUAL_FINALIZATION": '"yes"'}
    )
    assert out.returncode == 2 and "manual_finalization" in out.stderr and "Traceback" not in out.stderr


# ------------------------------------------------------------------------------ first phrase


@pytest.mark.parametrize(
    ("text", "words", "phrase"),
    [
        ("It is sunny and warm today, about", 8, "It is sunny and warm today,"),
        ("It is sunny and warm today, about", 3, "It is sunny"),
        ("You are welcome. Goodbye!", 5, "You are welcome."),
        ("Well; then", 5, "Well;"),
        ("We are open from nine", 5, None),  # "nine" may still grow ("ninety")
        ("We are open from nine ", 5, "We are open from nine"),
        ('He said "yes," then', 5, 'He said "yes,"'),
        ("", 5, None),
    ],
)
def test_the_first_phrase_ends_at_a_clause_break_or_after_n_complete_words(
    text: str, words: int, phrase: str | None
) -> None:
    cut = first_phrase_end(text, words)
    assert (None if cut is None else text[:cut]) == phrase


async def tokens_for(tokenizer: tokenize.SentenceTokenizer, pieces: list[str]) -> list[tuple[int, str]]:
    """(pieces pushed when the token came out, token), as a TTS stream feeds the tokenizer."""
    stream = tokenizer.stream()
    out: list[tuple[int, str]] = []
    pushed = 0

    async def read() -> None:
        async for data in stream:
            out.append((pushed, data.token))

    reader = asyncio.create_task(read())
    for piece in pieces:
        stream.push_text(piece)
        pushed += 1
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    stream.end_input()
    await asyncio.wait_for(reader, 2.0)
    return out


async def test_the_first_phrase_leaves_while_the_sentence_is_still_streaming() -> None:
    reply = "We are open from nine in the morning to six in the evening. Come and see us!"
    pieces = [" " + w if i else w for i, w in enumerate(reply.split())]
    plain = await tokens_for(tokenize.blingfire.SentenceTokenizer(), pieces)
    phrased = await tokens_for(FirstPhraseTokenizer(4), pieces)
    # livekit's way: the first sentence leaves once the second has begun
    assert plain[0] == (
        len(reply.split(".")[0].split()) + 1,
        "We are open from nine in the morning to six in the evening.",
    )
    # the first phrase leaves when its fourth word is complete (the fifth has begun)
    assert phrased[0] == (5, "We are open from")
    # nothing is lost, reordered or split mid-word
    assert " ".join(t for _, t in phrased).split() == reply.split()
    assert [t for _, t in phrased[1:]] == [
        "nine in the morning to six in the evening.",
        "Come and see us!",
    ]


async def test_each_flushed_segment_starts_with_its_own_first_phrase() -> None:
    stream = FirstPhraseTokenizer(2).stream()
    for text in ("One two three.", "Four five six."):
        stream.push_text(text + " ")
        stream.flush()
    stream.end_input()
    tokens = [data.token async for data in stream]
    assert tokens == ["One two", "three.", "Four five", "six."]


async def test_the_elevenlabs_plugin_speaks_the_first_phrase_first(session: aiohttp.ClientSession) -> None:
    async with ElevenLabsServer() as srv:
        tts = build(
            "tts", {"tts.elevenlabs.base_url": srv.base_url, "tts.elevenlabs.first_phrase_words": 3}, session
        )
        assert isinstance(tts._opts.word_tokenizer, FirstPhraseTokenizer)
        async with tts.stream(conn_options=FAST) as stream:
            for word in ["It", "is", "sunny", "and", "warm", "today,", "about", "twenty", "degrees."]:
                stream.push_text(word + " ")
            stream.end_input()
            audio = [ev.frame async for ev in stream]
    assert audio
    texts = [m.get("text") for _, m in srv.received if (m.get("text") or "").strip()]
    # each piece is sent with a flush (the plugin's auto mode), the first phrase on its own
    assert texts[:2] == ["It is sunny ", "and warm today, about twenty degrees. "]
    assert all(m.get("flush") for _, m in srv.received if (m.get("text") or "").strip())


async def test_zero_keeps_the_plugins_own_sentence_tokenizer(session: aiohttp.ClientSession) -> None:
    tts = build("tts", {"tts.elevenlabs.first_phrase_words": 0}, session)
    assert isinstance(tts._opts.word_tokenizer, tokenize.blingfire.SentenceTokenizer)


@pytest.mark.parametrize("value", ["-1", "51", "true", '"five"'])
def test_first_phrase_words_is_validated(cli, planted: dict[str, str], value: str) -> None:
    out = cli(
        "config", "check", "--env", "production", env={"HANDLER_TTS__ELEVENLABS__FIRST_PHRASE_WORDS": value}
    )
    assert out.returncode == 2 and "first_phrase_words" in out.stderr and "Traceback" not in out.stderr
