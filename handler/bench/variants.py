"""What `bench` compares: a variant is an environment plus setting overrides (and, for the guide's
"before", a new connection per request). Adding one is a line here, or `--variant` on the command
line (e.g. `--variant quick=fast:vad.min_silence_duration=0.2`); `--with-smart-turn` pairs each
with itself under the end-of-turn model (`with_smart_turn`)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PRESETS = ("dev", "fast", "stable", "production")


@dataclass(frozen=True)
class Variant:
    name: str
    env: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    connection_per_request: bool = False
    """Every LLM request and TTS stream opens a new connection (the guide's "before")."""
    about: str = ""


LIVEKIT_DEFAULTS: dict[str, Any] = {
    # livekit-agents 1.8's TurnHandlingOptions defaults (voice/turn.py), turn detection by VAD (the
    # starter agent's turn-detector model needs LiveKit Cloud inference)
    "turn.min_endpointing_delay": 0.5,
    "turn.max_endpointing_delay": 3.0,
    "turn.endpointing_mode": "fixed",
    "turn.interruption_threshold": 0.5,  # neutral: min_interruption_duration applies unscaled
    "turn.min_interruption_duration": 0.5,
    "turn.min_interruption_words": 0,
    "turn.false_interruption_timeout": 2.0,
    "turn.resume_false_interruption": True,
    "turn.preemptive_generation": True,
    "turn.aec_warmup_duration": 3.0,
    # silero.VAD.load()'s defaults
    "vad.min_speech_duration": 0.05,
    "vad.min_silence_duration": 0.55,
    "vad.activation_threshold": 0.5,
    "vad.silero.prefix_padding_duration": 0.5,
    # the soniox plugin's default endpoint delay and no finalize on the VAD's end of speech (the
    # plugin declares no manual flush); the elevenlabs plugin's first audio from the first full
    # sentence; no cap on reply tokens
    "stt.soniox.max_endpoint_delay_ms": 2000,
    "stt.soniox.manual_finalization": False,
    "tts.elevenlabs.first_phrase_words": 0,
    "llm.max_tokens": 100_000,
    "logging.level": "INFO",
}

BUILT_IN: dict[str, Variant] = {
    "before": Variant(
        "before",
        "dev",
        {**LIVEKIT_DEFAULTS, "logging.level": "DEBUG", "http.prewarm": False},
        connection_per_request=True,
        about="the guide's before: livekit's defaults, a new HTTP session per request, DEBUG logs, "
        "no token cap",
    ),
    "livekit": Variant(
        "livekit",
        "dev",
        LIVEKIT_DEFAULTS,
        about="plain livekit defaults, as LiveKit's starter agent has them (INFO logs, pooled connections)",
    ),
    **{env: Variant(env, env, about=f"environments/{env}.toml") for env in PRESETS},
}
DEFAULT = ("before", "livekit", *PRESETS)


class VariantError(ValueError):
    """A variant the user named or wrote that cannot be used; the message says what is allowed."""


def parse(spec: str) -> Variant:
    """A built-in name, or `NAME=ENV[:key=value,key=value...]` with each value TOML (a bare word
    is taken as a string): `quick=fast:vad.min_silence_duration=0.2,turn.min_endpointing_delay=0.2`."""
    if "=" not in spec.split(":", 1)[0]:
        if spec in BUILT_IN:
            return BUILT_IN[spec]
        raise VariantError(
            f"unknown variant {spec!r}; built-in: {', '.join(BUILT_IN)}, or NAME=ENV[:key=value,...]"
        )
    name, _, rest = spec.partition("=")
    env, _, pairs = rest.partition(":")
    if not name.strip() or not env.strip():
        raise VariantError(
            f"variant {spec!r}: expected NAME=ENV[:key=value,...], e.g. quick=fast:llm.max_tokens=200"
        )
    base = BUILT_IN.get(env.strip())
    overrides: dict[str, Any] = dict(base.overrides) if base else {}
    try:
        overrides.update(parse_pairs(pairs.split(",")))
    except VariantError as e:
        raise VariantError(f"variant {spec!r}: {e}") from None
    return Variant(
        name.strip(),
        base.env if base else env.strip(),
        overrides,
        connection_per_request=bool(base and base.connection_per_request),
        about=f"{env.strip()} with {pairs}" if pairs else env.strip(),
    )


def parse_pairs(pairs: list[str]) -> dict[str, Any]:
    """`key=value` settings (each value TOML; a bare word is a string) as overrides."""
    overrides: dict[str, Any] = {}
    for pair in filter(None, (p.strip() for p in pairs)):
        key, eq, raw = pair.partition("=")
        if not eq or not key.strip():
            raise VariantError(f"{pair!r} is not key=value")
        overrides[key.strip()] = _value(raw.strip())
    return overrides


def _value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


SMART_TURN = "+smart-turn"


def with_smart_turn(base: Variant) -> Variant:
    """`bench --with-smart-turn`: the same variant with turn detection by the end-of-turn model."""
    return Variant(
        base.name + SMART_TURN,
        base.env,
        {**base.overrides, "turn.detection": "smart-turn"},
        connection_per_request=base.connection_per_request,
        about=f"{base.about or base.env}, turn detection by Smart Turn v3",
    )


def paired_with_smart_turn(variants: list[Variant]) -> list[Variant]:
    """Each variant followed by itself with the model; one that already has it stays alone."""
    out = []
    for v in variants:
        out.append(v)
        if v.overrides.get("turn.detection") != "smart-turn":
            out.append(with_smart_turn(v))
    return out
