"""Durations a provider reports about its own work in this process, by name, for the commands that
measure it (`bench` reports the end-of-turn model's inference time from `EOT_INFERENCE`). A plugin
records through `handler.api.record_timing`; the core reads here and never imports the plugin."""

from __future__ import annotations

from collections import deque

KEPT = 10_000
"""The latest durations kept per name."""
EOT_INFERENCE = "turn.eot_inference"
"""Seconds each end-of-turn prediction took (features + model)."""

_series: dict[str, deque[float]] = {}


def record(name: str, seconds: float) -> None:
    _series.setdefault(name, deque(maxlen=KEPT)).append(seconds)


def times(name: str) -> list[float]:
    """This process's durations under `name` in seconds, oldest first (at most KEPT)."""
    return list(_series.get(name, ()))
