"""What the offline commands run instead of the cloud (`simulate --cloud-fakes`, `loadtest`, `bench`, and
the tests): local servers that speak the OpenAI, ElevenLabs and Soniox wire
protocols closely enough for the unmodified livekit plugins, with latency profiles, injectable
faults and connection counters; the livekit-server runner (livekit_server) and a worker started as a
user starts it (worker_process). Test-only helpers live in tests/support/."""

from ._base import Fault, FaultQueue, LatencyProfile, ProviderServer, ServerStats
from .elevenlabs_server import ElevenLabsServer, tone_for_text
from .openai_server import OpenAIServer, echo_responder
from .soniox_server import EnergySegmenter, SonioxServer, placeholder_recognizer

__all__ = [
    "ElevenLabsServer",
    "EnergySegmenter",
    "Fault",
    "FaultQueue",
    "LatencyProfile",
    "OpenAIServer",
    "ProviderServer",
    "ServerStats",
    "SonioxServer",
    "echo_responder",
    "placeholder_recognizer",
    "tone_for_text",
]
