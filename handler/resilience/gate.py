"""The per-process breaker in front of an LLM or TTS of a fallback chain.

livekit's FallbackAdapter probes a failed LLM or TTS in the background with the request it failed,
again for each request it hands to the next provider; a dead primary TTS was probed 9-12 times in
a 35 s call, each probe with its own retries. Gated, a request to a provider whose breaker is down
is refused at once, with no network and no retries (`Refused`), until the next probe is due; the
adapter meanwhile serves from the next provider. The probe is one request (its attempts bounded
by MAX_RETRIES + 1 as always); its outcome, like every request's, updates the breaker: an error
that ends a request marks it down (or longer down), any completed request marks it healthy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from livekit.agents import APIConnectionError, llm, tts

from handler.resilience.breaker import Breaker, ProviderDown


class Refused(APIConnectionError):
    """A request not sent: the provider is down and its next probe is not due."""

    def __init__(self, down: ProviderDown) -> None:
        super().__init__(str(down), retryable=False)


def refused(error: Any) -> bool:
    return isinstance(getattr(error, "error", error), Refused)


class _RefusedChat(llm.LLMStream):
    def __init__(self, owner: llm.LLM, down: ProviderDown, **kwargs: Any) -> None:
        super().__init__(owner, **kwargs)
        self._down = down

    async def _run(self) -> None:
        raise Refused(self._down)


class _RefusedSynthesis(tts.SynthesizeStream):
    def __init__(self, owner: tts.TTS, down: ProviderDown, conn_options: Any) -> None:
        super().__init__(tts=owner, conn_options=conn_options)
        self._down = down

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        raise Refused(self._down)


class _RefusedChunk(tts.ChunkedStream):
    def __init__(self, owner: tts.TTS, down: ProviderDown, text: str, conn_options: Any) -> None:
        super().__init__(tts=owner, input_text=text, conn_options=conn_options)
        self._down = down

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        raise Refused(self._down)


def _no_retry(conn_options: Any) -> Any:
    return dataclasses.replace(conn_options, max_retry=0)


def gate(instance: Any, breaker: Breaker, *, refuse: bool) -> Any:
    """Track the instance's health on `breaker`; with `refuse` (a chain member), refuse its
    requests while it is down. Patches the instance's own methods: it stays what livekit built."""

    def on_error(ev: Any) -> None:
        if not getattr(ev, "recoverable", True) and not refused(ev):
            breaker.failure()

    instance.on("error", on_error)
    instance.on("metrics_collected", lambda *_: breaker.success() if breaker.down else None)
    if not refuse:
        return instance

    def down() -> ProviderDown | None:
        return None if breaker.admit() else ProviderDown(breaker.key, breaker.retry_in())

    if isinstance(instance, llm.LLM):
        chat = instance.chat

        def gated_chat(*, chat_ctx: Any, tools: Any = None, conn_options: Any = None, **kw: Any) -> Any:
            if (d := down()) is not None:
                return _RefusedChat(
                    instance, d, chat_ctx=chat_ctx, tools=tools or [], conn_options=_no_retry(conn_options)
                )
            extra = {} if conn_options is None else {"conn_options": conn_options}
            return chat(chat_ctx=chat_ctx, tools=tools, **extra, **kw)

        instance.chat = gated_chat  # type: ignore[method-assign]
    elif isinstance(instance, tts.TTS):
        stream, synthesize = instance.stream, instance.synthesize

        def gated_stream(*, conn_options: Any = None, **kw: Any) -> Any:
            if (d := down()) is not None:
                return _RefusedSynthesis(instance, d, _no_retry(conn_options))
            return stream(**({} if conn_options is None else {"conn_options": conn_options}), **kw)

        def gated_synthesize(text: str, *, conn_options: Any = None, **kw: Any) -> Any:
            if (d := down()) is not None:
                return _RefusedChunk(instance, d, text, _no_retry(conn_options))
            return synthesize(text, **({} if conn_options is None else {"conn_options": conn_options}), **kw)

        instance.stream, instance.synthesize = gated_stream, gated_synthesize  # type: ignore[method-assign]
    return instance
