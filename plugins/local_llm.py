"""Built-in LLM `local`: an offline, deterministic responder (no model, no network).

It picks a canned reply by matching regular expressions against the last user message and
streams it word by word at a configured pace, so sessions, latency metrics and interruptions
can be exercised without a real LLM. It never calls tools.

Options (`[default.llm.local]`):
    replies = []             # [{pattern = "regex", reply = "text"}, ...]; the first pattern found
                             # (case-insensitive re.search) in the last user message wins
    default_reply = "..."    # said when no pattern matches (or there is no user message)
    ttft = 0.3               # seconds before the first token
    tokens_per_second = 50   # pace of the following tokens
    max_tokens = 500         # the reply is cut after this many tokens (words); normally set
                             # stage-wide as `llm.max_tokens`
The other stage-wide keys (`instructions`, `temperature`) are ignored.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, llm, utils
from livekit.agents.types import NotGivenOr

from handler.hookspecs import hookimpl

DEFAULT_REPLY = "I am an offline test responder and can only give canned replies."
DEFAULTS: dict[str, Any] = {
    "replies": [],
    "default_reply": DEFAULT_REPLY,
    "ttft": 0.3,
    "tokens_per_second": 50.0,
    "max_tokens": 500,
}


def tokenize(text: str) -> list[str]:
    """Words with their leading whitespace, so the tokens concatenate back to the text."""
    return re.findall(r"\s*\S+", text)


class LocalLLM(llm.LLM):
    def __init__(
        self,
        *,
        replies: list[tuple[re.Pattern[str], str]] | None = None,
        default_reply: str = DEFAULT_REPLY,
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
        messages = self._chat_ctx.messages()
        user_text = next((m.text_content or "" for m in reversed(messages) if m.role == "user"), "")
        tokens = tokenize(self._llm.reply_for(user_text))[: self._llm._max_tokens]
        request_id = utils.shortuuid("local-")

        for i, token in enumerate(tokens):
            # sleep to an absolute schedule so the pace does not drift with loop latency
            due = started + self._llm._ttft + i * self._llm._token_interval
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            delta = llm.ChoiceDelta(role="assistant", content=token)
            self._event_ch.send_nowait(llm.ChatChunk(id=request_id, delta=delta))

        # "tokens" are words on both sides: an estimate, but it keeps usage metrics populated
        prompt_tokens = sum(len((m.text_content or "").split()) for m in messages)
        usage = llm.CompletionUsage(
            completion_tokens=len(tokens),
            prompt_tokens=prompt_tokens,
            total_tokens=prompt_tokens + len(tokens),
        )
        self._event_ch.send_nowait(llm.ChatChunk(id=request_id, usage=usage))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _validate(options: Mapping[str, Any]) -> list[str]:
    opts = {**DEFAULTS, **options}
    problems = []
    replies = opts["replies"]
    if not isinstance(replies, list | tuple):
        problems.append("replies: must be a list of {pattern, reply} tables")
    else:
        for i, item in enumerate(replies):
            if not isinstance(item, Mapping) or not all(
                isinstance(item.get(key), str) for key in ("pattern", "reply")
            ):
                problems.append(f"replies: entry {i + 1} needs a string pattern and a string reply")
                continue
            try:
                re.compile(item["pattern"], re.IGNORECASE)
            except re.error as e:
                problems.append(f"replies: entry {i + 1} has an invalid pattern ({e})")
    if not isinstance(opts["default_reply"], str):
        problems.append("default_reply: must be a string")
    if not _is_number(opts["ttft"]) or opts["ttft"] < 0:
        problems.append("ttft: must be a number of seconds >= 0")
    if not _is_number(opts["tokens_per_second"]) or opts["tokens_per_second"] <= 0:
        problems.append("tokens_per_second: must be a number > 0")
    if isinstance(opts["max_tokens"], bool) or not isinstance(opts["max_tokens"], int):
        problems.append("max_tokens: must be an integer")
    elif opts["max_tokens"] < 1:
        problems.append("max_tokens: must be at least 1")
    return problems


def _build(options: Mapping[str, Any], runtime: Any) -> LocalLLM:
    if problems := _validate(options):
        raise ValueError("llm.local: " + "; ".join(problems))
    opts = {**DEFAULTS, **options}
    return LocalLLM(
        replies=[(re.compile(r["pattern"], re.IGNORECASE), r["reply"]) for r in opts["replies"]],
        default_reply=opts["default_reply"],
        ttft=float(opts["ttft"]),
        tokens_per_second=float(opts["tokens_per_second"]),
        max_tokens=opts["max_tokens"],
    )


@hookimpl(trylast=True)
def register_providers(register: Any) -> None:
    register("llm", "local", _build, options=None, validate=_validate)
