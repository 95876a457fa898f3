"""Per-stage fallback from config: `stt.fallback = ["soniox", "local"]` (likewise `llm`, `tts`) makes
the stage livekit's `FallbackAdapter` over those providers, in that order.

`fallback` lists the whole chain, primary first, and the registry requires its first entry to be
the stage's `provider`, so `provider` always names what serves while everything is healthy. Empty
(the default), or only the provider, means no adapter.

One retry layer per request, as everywhere: the adapter retries each provider MAX_RETRIES times
(HTTP_TIMEOUT per attempt) before moving to the next, so the session's own connect options for an
adapted stage carry no retries (retrying the adapter as a whole would multiply the attempts).

Recovery, as livekit implements it: a provider that fails is marked unavailable and probed in the
background with the request it failed (LLM: the same chat; TTS: the same text; STT: a second stream
fed the same audio until it yields a final transcript). Once a probe succeeds, the next LLM or TTS
request goes to it again. The session's STT stream is long-lived: it stays on the backup until that
stream ends, so a recovered STT primary serves again from the next session.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from handler.config import Settings
    from handler.pipeline.runtime import Runtime
    from handler.plan import Plan
    from handler.registry import Registry
    from handler.resilience.ledger import FaultLedger

STAGES = ("stt", "llm", "tts")
"""The stages that take a `fallback` chain."""


def build(
    plan: Plan,
    stage: str,
    runtime: Runtime,
    *,
    vad: Any = None,
    ledger: FaultLedger | None = None,
    members: dict[str, list[Any]] | None = None,
) -> Any:
    """The stage's provider, or a FallbackAdapter over its chain. `vad` lets the STT adapter run
    non-streaming providers (such as `local`) through livekit's StreamAdapter. Each provider goes
    through `handler.resilience.stages.protect` (bounded attempts, watchdog, breaker); `members`
    receives the providers as the session uses them, so their faults can be counted."""
    from handler.resilience.stages import protect

    if stage not in STAGES:
        return plan.build(stage, runtime)
    chosen = plan.stage(stage)
    chain = [
        protect(link, link.build(runtime), plan.resilience, in_chain=chosen.chained, ledger=ledger)
        for link in chosen.chain
    ]
    if members is not None:
        members[stage] = chain
    if not chosen.chained:
        return chain[0]
    from livekit.agents import llm, stt, tts

    opts = runtime.conn_options
    if stage == "stt":
        return stt.FallbackAdapter(
            chain,
            vad=vad,
            attempt_timeout=opts.timeout,
            max_retry_per_stt=opts.max_retry,
            retry_interval=opts.retry_interval,
        )
    if stage == "llm":
        return llm.FallbackAdapter(
            chain,
            attempt_timeout=opts.timeout,
            max_retry_per_llm=opts.max_retry,
            retry_interval=opts.retry_interval,
        )
    # the TTS adapter takes each attempt's timeout and retry interval from the session's options
    return tts.FallbackAdapter(chain, max_retry_per_tts=opts.max_retry)


def build_stage(
    stage: str,
    settings: Settings,
    registry: Registry,
    runtime: Runtime,
    *,
    vad: Any = None,
    ledger: FaultLedger | None = None,
    members: dict[str, list[Any]] | None = None,
) -> Any:
    """`build` for callers holding settings and a registry (tests written before the plan)."""
    from handler.plan import resolve

    return build(resolve(settings, registry), stage, runtime, vad=vad, ledger=ledger, members=members)


def is_adapter(instance: Any) -> bool:
    from livekit.agents import llm, stt, tts

    return isinstance(instance, stt.FallbackAdapter | llm.FallbackAdapter | tts.FallbackAdapter)


def session_conn_options(instance: Any, runtime: Runtime) -> Any:
    """The connect options the session passes to a stage: the retry policy's, without retries for
    an adapter (it retries each provider itself)."""
    opts = runtime.conn_options
    return dataclasses.replace(opts, max_retry=0) if is_adapter(instance) else opts
