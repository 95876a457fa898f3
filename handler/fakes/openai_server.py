"""Local OpenAI-compatible chat-completions server for the unmodified openai plugin.

Wire format (what the openai SDK sends and parses):
  POST {base}/chat/completions, `Authorization: Bearer <key>`, JSON {model, messages,
  stream: true, stream_options: {include_usage: true}, ...}
  -> text/event-stream: `data: <chat.completion.chunk>` events: a role chunk, one chunk per
     content token (choices[0].delta.content), a chunk with finish_reason "stop", a usage chunk
     with `choices: []` (when include_usage), then `data: [DONE]`; the body ends right after
     [DONE] so the SDK's drain finds it complete and keeps the connection alive.
  GET {base}/models -> {"object": "list", "data": [...]} (called by LLM.prewarm()).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ._base import (
    ALL_FAULTS,
    Fault,
    ProviderServer,
    StreamFault,
    abort_connection,
    maybe_await,
    pause,
)

Responder = Callable[[list[dict[str, Any]]], "str | Awaitable[str]"]


def message_text(message: dict[str, Any]) -> str:
    """Text of a chat message whose content is a string or a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict)).strip()
    return ""


def echo_responder(messages: list[dict[str, Any]]) -> str:
    """Default reply: deterministic, derived from the last user message."""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = message_text(message).strip().rstrip(".!?")
            return f"You said: {text}." if text else "I did not catch that."
    return "Hello! How can I help you?"


def split_tokens(text: str) -> list[str]:
    """Word-sized tokens that keep their leading whitespace, so they concatenate back."""
    return re.findall(r"\s*\S+", text) or [text]


class OpenAIServer(ProviderServer):
    """`async with OpenAIServer() as srv: openai.LLM(base_url=srv.base_url, api_key="test")`.

    stats.events: "completions" (responses started), "fault:<kind>".
    """

    def __init__(
        self,
        *,
        responder: Responder = echo_responder,
        models: tuple[str, ...] = ("gpt-4.1", "gpt-4.1-mini", "gpt-4o-mini"),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.responder = responder
        self.models = models

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = {401: "invalid_request_error", 429: "rate_limit_exceeded"}.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        return {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}

    def _denied(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return self.status_response(401, "Incorrect API key provided.")

    async def _models(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        fault = await self._take_connect_fault(request, main=False)
        if fault is not None:
            return fault
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "local"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            body = await request.json()
            messages = list(body["messages"])
        except (ValueError, KeyError, TypeError):
            return self.status_response(400, "Invalid request body: 'messages' is required.")
        self.received.append((request.path, body))

        # one fault per attempt, whatever its kind
        fault = self._take_fault(request, ALL_FAULTS, main=True)
        if (failed := await self._connect_fault(fault)) is not None:
            return failed

        self.stats.events["completions"] += 1
        reply = await maybe_await(self.responder(messages))
        model = body.get("model", "gpt-4.1")
        if not body.get("stream"):
            return web.json_response(self._completion(model, reply, messages))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._stream(request, model, reply, messages, include_usage, fault)

    async def _stream(
        self,
        request: web.Request,
        model: str,
        reply: str,
        messages: list[dict[str, Any]],
        include_usage: bool,
        fault: Fault | None,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
            payload = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_local",
                "choices": choices,
                "usage": usage,
            }
            return f"data: {json.dumps(payload)}\n\n".encode()

        def delta(d: dict[str, Any], finish: str | None = None) -> bytes:
            return chunk([{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}])

        plan = StreamFault(fault)
        interval = 1.0 / self.profile.tokens_per_second if self.profile.tokens_per_second else 0
        tokens = split_tokens(reply)

        await pause(self.profile.first_byte)
        await resp.write(delta({"role": "assistant", "content": ""}))
        for sent, token in enumerate(tokens):
            if (due := plan.due(sent)) and not await self._apply(request, resp, due):
                return resp
            if sent:
                await pause(interval)
            await resp.write(delta({"content": token}))
        if (due := plan.due_at_end()) and not await self._apply(request, resp, due):
            return resp

        await pause(self.profile.final_delay)
        await resp.write(delta({}, finish="stop"))
        if include_usage:
            await resp.write(chunk([], usage=self._usage(messages, tokens)))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _apply(self, request: web.Request, resp: web.StreamResponse, fault: Fault) -> bool:
        """Apply a stream fault; False when the response is over."""
        if fault.kind == "stall":
            await pause(fault.delay)
            return True
        if fault.kind == "malformed":
            await resp.write(b'data: {"id": "chatcmpl-garbage", "choices": [{"delta": \n\n')
            return True
        if fault.kind == "error":
            # the SDK raises openai.APIError for a `data: {"error": ...}` event
            error = json.dumps(self._error_body(fault.status, fault.message))
            await resp.write(f"data: {error}\n\n".encode())
            await resp.write_eof()
            return False
        abort_connection(request)  # disconnect
        return False

    @staticmethod
    def _usage(messages: list[dict[str, Any]], tokens: list[str]) -> dict[str, int]:
        prompt = sum(len(message_text(m).split()) + 4 for m in messages)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": len(tokens),
            "total_tokens": prompt + len(tokens),
        }

    def _completion(self, model: str, reply: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "logprobs": None,
                    "message": {"role": "assistant", "content": reply},
                }
            ],
            "usage": self._usage(messages, split_tokens(reply)),
        }
