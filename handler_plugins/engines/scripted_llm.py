"""The scripted responder behind livekit's LLM interface (the `local` LLM's engine)."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, llm, utils
from livekit.agents.types import NotGivenOr

from handler.api import send_event


def tokenize(text: str) -> list[str]:
    """Words with their leading whitespace, so the tokens concatenate back to the text."""
    return re.findall(r"\s*\S+", text)


class LocalLLM(llm.LLM):
    def __init__(
        self,
        *,
        replies: list[tuple[re.Pattern[str], str]] | None = None,
        default_reply: str,
        ttft: float = 0.3,
        tokens_per_second: float = 50.0,
        max_tokens: int = 500,
    ) -> None:
        super().__init__()
        self._replies = replies or []
        self._default_reply = default_reply
        self._ttft = ttft
        self._token_interval = 1.0 / tokens_per_second
        self._max_tokens = max_tokens

    @property
    def model(self) -> str:
        return "local-responder"

    @property
    def provider(self) -> str:
        return "local"

    def reply_for(self, user_text: str) -> str:
        for pattern, reply in self._replies:
            if pattern.search(user_text):
                return reply
        return self._default_reply

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return _LocalStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _LocalStream(llm.LLMStream):
    _llm: LocalLLM

    async def _run(self) -> None:
        started = time.perf_counter()
        messages = self.chat_ctx.messages()
        user_text = next((m.text_content or "" for m in reversed(messages) if m.role == "user"), "")
        tokens = tokenize(self._llm.reply_for(user_text))[: self._llm._max_tokens]
        request_id = utils.shortuuid("local-")

        for i, token in enumerate(tokens):
            # sleep to an absolute schedule so the pace does not drift with loop latency
            due = started + self._llm._ttft + i * self._llm._token_interval
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            delta = llm.ChoiceDelta(role="assistant", content=token)
            send_event(self, llm.ChatChunk(id=request_id, delta=delta))

        # "tokens" are words on both sides: an estimate, but it keeps usage metrics populated
        prompt_tokens = sum(len((m.text_content or "").split()) for m in messages)
        usage = llm.CompletionUsage(
            completion_tokens=len(tokens),
            prompt_tokens=prompt_tokens,
            total_tokens=prompt_tokens + len(tokens),
        )
        send_event(self, llm.ChatChunk(id=request_id, usage=usage))
