"""Built-in LLM `local`: an offline, deterministic responder (no model, no network).

It picks a canned reply by matching regular expressions against the last user message and
streams it word by word at a configured pace, so sessions, latency metrics and interruptions
can be exercised without a real LLM. It never calls tools.

Options: `OPTIONS` below (`[llm.local]`, their defaults and why); the reply is cut after the
stage-wide `llm.max_tokens` tokens (words). The other stage-wide keys (`instructions`,
`temperature`) are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from handler.api import Register, Runtime, hookimpl, table

OPTIONS = r'''
default_reply = "Sorry, I am an offline test responder and only know a few answers."  # when no pattern
                                                                                      # matches
ttft = 0.3                             # s before the first token (stands in for a cloud LLM's time to first
                                       # token)
tokens_per_second = 50.0               # pace of the following tokens
replies = [                            # first regex (case-insensitive) found in the user's words picks the
                                       # reply
  { pattern = "weather", reply = "It is sunny and warm today, about twenty degrees." },
  { pattern = "open|hours", reply = "We are open from nine in the morning to six in the evening." },
  { pattern = "order|package", reply = "Your order shipped yesterday and arrives tomorrow." },
  { pattern = "thank|bye", reply = "You are welcome. Goodbye!" },
  { pattern = "story|tell me", reply = """Once upon a time a small robot learned to listen. \
It listened to the wind, to the rain and to the people around it. Every day it understood a little \
more, until one day it could answer every question it was asked.""" },
]
'''
"""`[llm.local]`: this provider's options, their defaults and why. The lowest layer of the table:
every settings file changes them; `config show` lists them, labelled with this plugin."""
DECLARED = table(OPTIONS)
DEFAULTS: dict[str, Any] = {**DECLARED["options"], "max_tokens": 500}
"""What the factory falls back on for a key its options lack ([llm] max_tokens is always there)."""


@hookimpl(trylast=True)
def register_providers(register: Register) -> None:
    register(
        "llm",
        "local",
        _build,
        **DECLARED,
        validate=_validate,
        preload=(f"{__package__}.engines.scripted_llm",),
    )


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


def _build(options: Mapping[str, Any], runtime: Runtime) -> Any:
    from .engines.scripted_llm import LocalLLM  # heavy: only when built

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
