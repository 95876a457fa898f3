"""voice-handler: a LiveKit voice-agent worker whose every stage is a configured plugin."""

__version__ = "0.1.0"
