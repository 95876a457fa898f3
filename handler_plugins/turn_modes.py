"""Turn detection `vad` and `stt`: livekit's own modes, named like any provider so
`turn.detection` chooses among them and the model providers (`smart-turn`) alike.

- `vad`: the turn ends `min_endpointing_delay` after the VAD's end of speech;
- `stt`: the turn ends at the recognizer's endpoint (Soniox's endpoint detection, say).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handler.api import Register, Runtime, hookimpl

MODES = ("vad", "stt")


@hookimpl(trylast=True)
def register_providers(register: Register) -> None:
    for mode in MODES:
        register("turn", mode, _mode(mode), options={})


def _mode(mode: str) -> Any:
    def build(options: Mapping[str, Any], runtime: Runtime) -> str:
        return mode  # livekit's `turn_detection` takes the mode's name

    return build
