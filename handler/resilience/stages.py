"""Where the resilience layer meets the session: each provider instance as built by the registry
goes through `protect`, and `watch` attaches the fault ledger and the decider to a session."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from handler.resilience.breaker import Breaker, breaker_for
from handler.resilience.ledger import FaultLedger

if TYPE_CHECKING:
    from handler.plan import Link, Resilience


def provider_key(stage: str, name: str, options: Mapping[str, Any]) -> str:
    """One breaker per provider endpoint: `stt.soniox@wss://...` (the default endpoint when unset)."""
    return f"{stage}.{name}@{options.get('base_url') or 'default'}"


def breaker(link: Link, policy: Resilience) -> Breaker:
    return breaker_for(
        provider_key(link.stage, link.name, link.options),
        probe_initial=policy.probe_initial,
        probe_max=policy.probe_max,
    )


def protect(
    link: Link,
    instance: Any,
    policy: Resilience,
    *,
    in_chain: bool,
    ledger: FaultLedger | None,
) -> Any:
    """The provider as the session should use it: a streaming STT behind `GuardedSTT` (bounded
    attempts, watchdog, replay, per-process breaker); an LLM or TTS with its health tracked on its
    breaker and, in a chain, refused while down (`gate`): their plugins already bound each attempt
    with the timeout (a stalled stream too) and livekit's loop their attempts per request."""
    stage = link.stage
    if stage == "stt" and getattr(instance.capabilities, "streaming", False):
        from handler.resilience.stt_guard import GuardedSTT

        return GuardedSTT(instance, breaker=breaker(link, policy), in_chain=in_chain, ledger=ledger)
    if stage in ("llm", "tts"):
        from handler.resilience.gate import gate

        return gate(instance, breaker(link, policy), refuse=in_chain)
    return instance


def watch(stages: Mapping[str, Any], members: Mapping[str, list[Any]], ledger: FaultLedger) -> None:
    """Feed the ledger: every provider's errors (chain members too: an adapter hides them from the
    session) and every adapter's switch to its next provider (a stage with two members or more is
    one: `handler.resilience.fallback`)."""
    for stage, instance in stages.items():
        chain = members.get(stage) or [instance]
        for member in chain:
            ledger.watch_provider(stage, member)
        if len(chain) >= 2:
            ledger.watch_adapter(stage, instance)
