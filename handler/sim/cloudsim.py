"""`simulate --cloud-fakes`: the cloud stack (soniox STT, openai LLM, elevenlabs TTS) end to end over
local protocol-faithful servers, with latencies typical of the real services.

The unmodified livekit plugins speak their real wire protocols to `handler.fakes`'s servers on
127.0.0.1: only the `base_url`s change, as config overrides labelled "--cloud-fakes", and the session
is built by the same `handler.pipeline.session.build` path as in production. What the servers say
comes from real work, not from a script:

- the Soniox server recognizes the audio it receives with pocketsphinx (a language model of the
  scenario's phrases, as the `local` STT does);
- the OpenAI server answers from the `local` LLM's reply table (`llm.local.replies`, `default_reply`);
- the ElevenLabs server speaks with espeak-ng in the `local` TTS's voice and rate.

Emulated latencies (`PROFILES`), inside the ranges the real services show:

    STT final transcript   0.2 s after the endpoint   (Soniox real-time: 150-300 ms)
    LLM first token        0.4 s, then 50 tokens/s     (OpenAI gpt-4o-mini class: 300-500 ms)
    TTS first audio        0.2 s per context           (ElevenLabs turbo, multi-stream: 150-250 ms)
    new connection         0.3 s, once per TCP conn.   (DNS + TCP + TLS to a cloud region)

The Soniox server ends an utterance after `stt.soniox.max_endpoint_delay_ms` of silence, as Soniox
does, and sends the final transcript 0.2 s later.

Every stage runs its cloud provider whatever the environment selects (dev's `local` stages are
switched to soniox/openai/elevenlabs): asking for the cloud fakes means asking to exercise the cloud
plugins, so leaving a stage local would silently test nothing. A stage whose fallback chain already
names its cloud provider keeps its chain. The environment's other settings (turn, http, retry,
logging) apply unchanged. Keys that are not set are replaced by dummies for this run only.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from handler.fakes import ElevenLabsServer, LatencyProfile, OpenAIServer, SonioxServer

if TYPE_CHECKING:
    from handler.config import Settings
    from handler.plan import Plan
    from handler.registry import Registry
    from handler.sim.io import Clock
    from handler.sim.report import Report
    from handler.sim.scenario import Scenario

SOURCE = "--cloud-fakes"
CLOUD = {"stt": "soniox", "llm": "openai", "tts": "elevenlabs"}
"""The cloud provider of each stage: the production stack."""
BASE_URL = {stage: f"{stage}.{name}.base_url" for stage, name in CLOUD.items()}
DUMMY_KEY = "cloud-fakes-dummy-key"
LEAD_IN = 0.3
"""Seconds of silence put before each utterance the Soniox server recognizes (see `_recognizer`)."""

CONNECT = 0.3
"""Seconds a new TCP connection costs (charged on its first request or websocket handshake)."""
PROFILES = {
    # first interim 0.2 s after speech starts; final transcript 0.2 s after the endpoint
    "stt": LatencyProfile(connect_delay=CONNECT, first_byte=0.2, final_delay=0.2),
    # first token 0.4 s after the request, then 50 tokens/s (the `local` LLM's pace)
    "llm": LatencyProfile(connect_delay=CONNECT, first_byte=0.4, tokens_per_second=50.0),
    # first audio of each context 0.2 s after its text is flushed; audio as fast as it's made
    "tts": LatencyProfile(connect_delay=CONNECT, first_byte=0.2),
}


def describe(profiles: Mapping[str, LatencyProfile] = PROFILES) -> str:
    """One line for the user: what the fakes emulate."""
    stt, llm, tts = profiles["stt"], profiles["llm"], profiles["tts"]
    return (
        f"emulated latency: STT final {stt.final_delay * 1000:.0f} ms after the endpoint, "
        f"LLM first token {llm.first_byte * 1000:.0f} ms, TTS first audio {tts.first_byte * 1000:.0f} ms, "
        f"new connection {llm.connect_delay * 1000:.0f} ms"
    )


# ------------------------------------------------------------------------- configuration


def cloud_overrides(settings: Settings) -> dict[str, Any]:
    """Overrides that put each stage on its cloud provider (see the module's docstring)."""
    out: dict[str, Any] = {}
    for stage, cloud in CLOUD.items():
        fallback = list(settings.get(f"{stage}.fallback") or [])
        if cloud in (fallback or [settings.get(f"{stage}.provider")]):
            continue
        out[f"{stage}.provider"] = cloud
        if fallback:  # keep the configured backups behind the cloud provider
            out[f"{stage}.fallback"] = [cloud, *fallback]
    return out


def connection_per_request(profiles: Mapping[str, LatencyProfile] = PROFILES) -> dict[str, LatencyProfile]:
    """The guide's "before": a new HTTP session for every LLM request and TTS stream, so each
    pays the connection's cost (moved into its first byte; the pool has nothing to reuse)."""
    import dataclasses

    out = dict(profiles)
    for stage in ("llm", "tts"):
        p = out[stage]
        out[stage] = dataclasses.replace(p, connect_delay=0.0, first_byte=p.first_byte + p.connect_delay)
    return out


def load_checked(
    env: str | None = None, overrides: Mapping[str, Any] | None = None, source: str = ""
) -> tuple[Settings, Registry]:
    """The environment for a run against the fakes (`load`), as settings and registry."""
    plan = load(env, overrides, source)
    return plan.settings, plan.registry


def load(env: str | None = None, overrides: Mapping[str, Any] | None = None, source: str = "") -> Plan:
    """The environment for a run against the fakes: cloud providers selected, `overrides` (labelled
    `source`) under that selection, and stand-in keys where real ones are absent (the fakes accept
    any key; a real key is kept)."""
    from handler import plan as plans
    from handler.registry import Registry

    registry = Registry.load()

    def on_the_cloud(settings: Settings) -> dict[str, Any]:
        given = settings.with_overrides(overrides, source) if overrides else settings
        return {**(overrides or {}), **cloud_overrides(given)}

    return plans.load(
        env,
        overrides=on_the_cloud,
        overrides_source=f"{SOURCE} ({source})" if overrides else SOURCE,
        stand_ins={
            secret: DUMMY_KEY
            for stage, name in CLOUD.items()
            if name in registry.names(stage)
            for secret in registry.get(stage, name).secrets
        },
        stand_ins_source=f"{SOURCE} (a stand-in key)",
        registry=registry,
    )


# ------------------------------------------------------------------------- the servers


@dataclass
class CloudFakes:
    """The three running servers: tests inject faults and read counters through them."""

    stt: SonioxServer
    llm: OpenAIServer
    tts: ElevenLabsServer

    def overrides(self) -> dict[str, str]:
        return {
            BASE_URL["stt"]: self.stt.base_url,
            BASE_URL["llm"]: self.llm.base_url,
            BASE_URL["tts"]: self.tts.base_url,
        }


def _recognizer(settings: Settings, registry: Registry, phrases: tuple[str, ...]) -> Callable[[bytes], Any]:
    """The Soniox server's ears: the `local` STT provider, built through the registry and used
    through livekit's STT interface (so no plugin internals leak into the core)."""
    import numpy as np
    from livekit import rtc

    from handler.plan import resolve

    phrases_only = {"stt.local.phrases": list(phrases)}
    stt = resolve(settings, registry).build_other("stt", "local", phrases_only, SOURCE)
    # The server's utterance keeps only ~0.1 s before the speech onset (the local STT's VAD segments
    # keep 0.5 s); pocketsphinx mishears a first word that starts that close to the edge.
    lead_in = np.zeros(int(LEAD_IN * 16000), np.int16)

    async def recognize(pcm_16k: bytes) -> str:
        pcm = np.concatenate([lead_in, np.frombuffer(pcm_16k, np.int16)])
        frame = rtc.AudioFrame(pcm.tobytes(), 16000, 1, len(pcm))
        event = await stt.recognize(frame)  # the plugin decodes off the event loop
        return event.alternatives[0].text if event.alternatives else ""

    return recognize


def responder(settings: Settings, registry: Registry) -> Callable[[list[dict[str, Any]]], str]:
    """The OpenAI server's answers: the `local` LLM's reply table."""
    from handler.fakes.openai_server import message_text
    from handler.plan import resolve

    table = resolve(settings, registry).build_other("llm", "local")

    def respond(messages: list[dict[str, Any]]) -> str:
        said = next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
        return table.reply_for(said)

    return respond


def _speaker(settings: Settings, registry: Registry) -> Callable[[str, int], Any]:
    """The ElevenLabs server's voice: the `local` TTS provider through livekit's TTS interface."""
    import numpy as np
    from livekit import rtc

    from handler import audio
    from handler.plan import resolve

    tts = resolve(settings, registry).build_other("tts", "local")

    async def speak(text: str, sample_rate: int) -> bytes:
        frames = [ev.frame async for ev in tts.synthesize(text)]
        if not frames:
            return b""
        frame = rtc.combine_audio_frames(frames)
        pcm = np.frombuffer(frame.data, np.int16)
        return audio.resample(pcm, frame.sample_rate, sample_rate).tobytes()

    return speak


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    registry: Registry,
    phrases: list[str] | tuple[str, ...] = (),
    profiles: Mapping[str, LatencyProfile] = PROFILES,
) -> AsyncIterator[tuple[Settings, CloudFakes]]:
    """Start the three servers; yields the settings pointed at them, and the servers."""
    phrases = tuple(dict.fromkeys([*phrases, *settings.get("stt.local.phrases", [])]))
    recognize = _recognizer(settings, registry, phrases)
    # load the recognizer's model now (up to ~0.5 s), not inside the first utterance
    await recognize(bytes(3200))
    async with (
        SonioxServer(recognizer=recognize, profile=profiles["stt"]) as stt,
        OpenAIServer(responder=responder(settings, registry), profile=profiles["llm"]) as llm,
        ElevenLabsServer(audio_for_text=_speaker(settings, registry), profile=profiles["tts"]) as tts,
    ):
        fakes = CloudFakes(stt=stt, llm=llm, tts=tts)
        yield settings.with_overrides(fakes.overrides(), SOURCE), fakes


async def simulate(
    settings: Settings,
    registry: Registry,
    scenario: Scenario,
    progress: Callable[[str], None] = lambda s: None,
) -> tuple[Report, Clock]:
    """`handler.sim.simulate` with the cloud stages served by the fakes."""
    from handler.sim import runner as sim

    async with running(settings, registry, scenario.recognizer_phrases()) as (cloud, fakes):
        progress(
            f"cloud fakes: soniox {fakes.stt.base_url}, openai {fakes.llm.base_url}, "
            f"elevenlabs {fakes.tts.base_url}; {describe()}"
        )
        return await sim.simulate(cloud, registry, scenario, progress)
