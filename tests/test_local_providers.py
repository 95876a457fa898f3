"""The offline `local` providers through the real livekit classes: espeak-ng speech, recognized
back by pocketsphinx, and the canned responder's choice of reply, pacing and usage."""

from __future__ import annotations

import time

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, llm, stt
from livekit.agents.metrics import LLMMetrics

from handler.pipeline.runtime import Runtime
from handler_plugins import local_llm, local_stt, local_tts
from handler_plugins.engines import espeak_tts

# the factories read only their options; they never touch the settings
RUNTIME = Runtime(settings=None, http_session=None, conn_options=DEFAULT_API_CONNECT_OPTIONS)  # type: ignore[arg-type]

PHRASES = [
    "Hello, can you hear me?",
    "What is the weather like in Paris tomorrow?",
    "Book a table for two at seven.",
    "Cancel my order, please.",
    "Thank you, goodbye!",
    "Can I speak to a human please",
    "When does the store open on Sunday",
    "I did not receive my package",
]


def words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c in "' " else " " for c in text.lower()).split()


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over words (substitutions + insertions + deletions)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def to_frame(pcm: np.ndarray, rate: int, channels: int = 1) -> rtc.AudioFrame:
    data = np.repeat(pcm, channels) if channels > 1 else pcm
    return rtc.AudioFrame(data.tobytes(), rate, channels, pcm.size)


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


def registered(module) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    module.register_providers(register=lambda stage, name, factory, **kw: calls.append((stage, name)))
    return calls


def test_modules_register_local_providers():
    assert registered(local_stt) == [("stt", "local")]
    assert registered(local_tts) == [("tts", "local")]
    assert registered(local_llm) == [("llm", "local")]


# ---------------------------------------------------------------- TTS


def test_synthesize_produces_speech():
    text = "What is the weather like in Paris tomorrow?"
    pcm, rate = espeak_tts.synthesize(text)
    assert rate == 22050 and pcm.dtype == np.int16
    duration = pcm.size / rate
    # 8 words at 175 words per minute is about 2.7 s; espeak is a little quicker
    assert 1.2 < duration < 4.0
    assert rms(pcm) > 1000  # speech, not silence

    slow, _ = espeak_tts.synthesize(text, rate=100)
    assert slow.size > 1.4 * pcm.size


def test_the_same_words_synthesize_to_the_same_samples_whatever_was_said_before():
    # espeak-ng carries state from one utterance to the next in its statics: a scenario's clips
    # depended on what the process had synthesized before (the engine now loads it afresh each time)
    first, _ = espeak_tts.synthesize("thanks bye", voice="en-us", rate=260)
    espeak_tts.synthesize("Something else entirely, in another voice.", voice="en-gb-scotland", rate=130)
    again, _ = espeak_tts.synthesize("thanks bye", voice="en-us", rate=260)
    assert np.array_equal(first, again)


def test_synthesize_resamples():
    pcm, rate = espeak_tts.synthesize("Hello, can you hear me?")
    pcm16, rate16 = espeak_tts.synthesize("Hello, can you hear me?", sample_rate=16000)
    assert rate16 == 16000 and pcm16.dtype == np.int16
    assert pcm16.size / rate16 == pytest.approx(pcm.size / rate, abs=1e-3)
    assert rms(pcm16) == pytest.approx(rms(pcm), rel=0.1)


async def test_tts_provider_streams_audio_frames():
    tts = local_tts._build({"voice": "en-us", "rate": 175}, RUNTIME)
    assert (tts.sample_rate, tts.num_channels, tts.provider) == (22050, 1, "local")
    assert not tts.capabilities.streaming

    events = [ev async for ev in tts.synthesize("Book a table for two at seven.")]
    assert len(events) > 1 and events[-1].is_final
    frame = rtc.combine_audio_frames([ev.frame for ev in events])
    assert frame.sample_rate == 22050 and frame.num_channels == 1
    assert 1.0 < frame.duration < 4.0
    assert rms(np.frombuffer(frame.data, dtype=np.int16)) > 1000


async def test_tts_language_code_voice_and_text_without_speech():
    tts = local_tts._build({"voice": "en-gb", "rate": 175}, RUNTIME)  # a language, not a name
    assert (await tts.synthesize("Hello.").collect()).duration > 0.3
    # nothing to pronounce: a moment of silence rather than a (retried) provider error
    assert (await tts.synthesize("...").collect()).duration > 0


def test_tts_rejects_bad_options():
    with pytest.raises(ValueError, match="no voice"):
        local_tts._build({"voice": "xx-nope", "rate": 175}, RUNTIME)
    with pytest.raises(ValueError, match="rate"):
        local_tts._build({"voice": "en-us", "rate": 1000}, RUNTIME)
    assert local_tts._validate({"voice": "en-us", "rate": 175}) == []


# ---------------------------------------------------------------- STT


async def test_stt_domain_model_recognizes_the_phrases():
    model = local_stt._build({"phrases": PHRASES}, RUNTIME)
    assert not model.capabilities.streaming and model.provider == "local"
    errors = total = exact = 0
    for phrase in PHRASES:
        pcm, rate = espeak_tts.synthesize(phrase, sample_rate=16000)
        ev = await model.recognize(to_frame(pcm, rate))
        assert ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT
        assert ev.alternatives[0].language == "en"
        text = ev.alternatives[0].text
        assert text == text.lower()
        ref, hyp = words(phrase), text.split()
        errors += word_errors(ref, hyp)
        total += len(ref)
        exact += ref == hyp
    assert errors / total <= 0.1, f"WER {errors / total:.3f}"
    assert exact >= len(PHRASES) - 1


async def test_stt_resamples_and_downmixes_input():
    model = local_stt._build({"phrases": PHRASES}, RUNTIME)
    pcm, rate = espeak_tts.synthesize("Cancel my order, please.", sample_rate=48000)
    # split into 20 ms stereo frames, as a room track delivers them
    step = rate // 50
    frames = [to_frame(pcm[i : i + step], rate, channels=2) for i in range(0, pcm.size, step)]
    ev = await model.recognize(frames)
    assert ev.alternatives[0].text == "cancel my order please"


async def test_stt_behind_the_vad_stream_adapter_a_session_uses():
    # what Agent.default.stt_node does with a non-streaming STT
    from livekit.plugins import silero

    model = local_stt._build({"phrases": PHRASES}, RUNTIME)
    adapter = stt.StreamAdapter(stt=model, vad=silero.VAD.load(min_silence_duration=0.4))
    silence = np.zeros(16000, dtype=np.int16)
    turns = [espeak_tts.synthesize(p, sample_rate=16000)[0] for p in PHRASES[:2]]
    pcm = np.concatenate([silence, turns[0], silence, turns[1], silence])
    stream = adapter.stream()
    for i in range(0, pcm.size, 320):  # 20 ms frames
        stream.push_frame(to_frame(pcm[i : i + 320], 16000))
    stream.end_input()
    finals = [
        ev.alternatives[0].text async for ev in stream if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT
    ]
    await stream.aclose()
    assert finals == ["hello can you hear me", "what is the weather like in paris tomorrow"]


async def test_stt_general_model_without_phrases():
    model = local_stt._build({"phrases": []}, RUNTIME)
    pcm, rate = espeak_tts.synthesize("Yes, that's right.", sample_rate=16000)
    ev = await model.recognize(to_frame(pcm, rate))
    assert ev.alternatives[0].text.strip()


async def test_stt_unknown_words_and_empty_audio_do_not_crash():
    model = local_stt._build({"phrases": ["Tell me about LiveKit", "Room 42 please"]}, RUNTIME)
    pcm, rate = espeak_tts.synthesize("Tell me about it", sample_rate=16000)
    ev = await model.recognize(to_frame(pcm, rate))
    assert ev.alternatives[0].text.startswith("tell me about")
    assert (await model.recognize([])).alternatives[0].text == ""

    # a phrase list with no dictionary word at all falls back to the general model
    fallback = local_stt._build({"phrases": ["LiveKit 42"]}, RUNTIME)
    assert (await fallback.recognize(to_frame(pcm, rate))).alternatives[0].text


def test_stt_rejects_bad_options():
    with pytest.raises(ValueError, match="phrases"):
        local_stt._build({"phrases": "hello"}, RUNTIME)


# ---------------------------------------------------------------- LLM

REPLIES = [
    {"pattern": r"\bweather\b", "reply": "It is sunny and mild today."},
    {"pattern": r"\b(book|reserve)\b.*\btable\b", "reply": "Your table is booked."},
]


def chat_ctx(*user_texts: str) -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content="You are a helpful voice assistant.")
    for text in user_texts:
        ctx.add_message(role="user", content=text)
        ctx.add_message(role="assistant", content="Okay.")
    return ctx


async def reply(model: llm.LLM, ctx: llm.ChatContext) -> tuple[list[llm.ChatChunk], float]:
    """The chunks and the seconds from the request to the first content chunk."""
    start = time.perf_counter()
    first = None
    chunks = []
    async with model.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if first is None and chunk.delta and chunk.delta.content:
                first = time.perf_counter() - start
            chunks.append(chunk)
    return chunks, first if first is not None else -1.0


def text_of(chunks: list[llm.ChatChunk]) -> str:
    return "".join(c.delta.content for c in chunks if c.delta and c.delta.content)


def responder(**options) -> llm.LLM:
    return local_llm._build({"replies": REPLIES, "ttft": 0.0, **options}, RUNTIME)


async def test_llm_replies_by_pattern_on_the_last_user_message():
    model = responder(default_reply="Sorry, I only know canned answers.")
    assert (model.model, model.provider) == ("local-responder", "local")

    chunks, _ = await reply(model, chat_ctx("What's the WEATHER like?"))
    assert text_of(chunks) == "It is sunny and mild today."
    chunks, _ = await reply(model, chat_ctx("What's the weather like?", "Can I reserve a table?"))
    assert text_of(chunks) == "Your table is booked."
    chunks, _ = await reply(model, chat_ctx("Tell me a joke"))
    assert text_of(chunks) == "Sorry, I only know canned answers."
    chunks, _ = await reply(model, chat_ctx())  # no user message yet (a greeting)
    assert text_of(chunks) == "Sorry, I only know canned answers."


async def test_llm_streams_with_configured_timing():
    # a ttft of 1 s: the bound below it leaves a busy machine 1 s of scheduling (0.3 s with 0.5
    # of slack was a coin toss under load) and still fails a ttft paid twice
    ttft = 1.0
    model = responder(ttft=ttft, tokens_per_second=50)
    start = time.perf_counter()
    chunks, first = await reply(model, chat_ctx("weather?"))
    elapsed = time.perf_counter() - start
    contents = [c.delta.content for c in chunks if c.delta and c.delta.content]
    assert contents == ["It", " is", " sunny", " and", " mild", " today."]
    assert ttft <= first < 2 * ttft
    assert elapsed >= ttft + 5 / 50  # the remaining 5 tokens at 50 per second


async def test_llm_honours_max_tokens_and_reports_usage():
    model = responder(max_tokens=3)
    collected: list[LLMMetrics] = []
    model.on("metrics_collected", collected.append)

    chunks, _ = await reply(model, chat_ctx("weather?"))
    assert text_of(chunks) == "It is sunny"
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].delta is None
    assert usage.completion_tokens == 3
    assert usage.prompt_tokens == 6 + 1 + 1  # system, user and assistant words
    assert usage.total_tokens == usage.prompt_tokens + 3

    assert len(collected) == 1 and collected[0].completion_tokens == 3
    assert collected[0].ttft >= 0


def test_llm_rejects_bad_options():
    with pytest.raises(ValueError, match="invalid pattern"):
        local_llm._build({"replies": [{"pattern": "(", "reply": "x"}]}, RUNTIME)
    with pytest.raises(ValueError, match="needs a string pattern"):
        local_llm._build({"replies": [{"reply": "x"}]}, RUNTIME)
    problems = local_llm._validate({"ttft": -1, "tokens_per_second": 0, "max_tokens": 0})
    assert [p.split(":")[0] for p in problems] == ["ttft", "tokens_per_second", "max_tokens"]
