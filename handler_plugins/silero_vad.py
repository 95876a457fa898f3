"""VAD `silero`: livekit's Silero plugin; the ONNX model ships in the wheel, loaded once per
process."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from handler.api import Register, Runtime, hookimpl, table

OPTIONS = """\
prefix_padding_duration = 0.5          # s of audio kept before detected speech
force_cpu = true                       # run the ONNX model on the CPU
sample_rate = 16000                    # model input rate: 8000 or 16000
"""
"""`[vad.silero]`: this provider's options, their defaults and why. The lowest layer of the table:
every settings file changes them; `config show` lists them, labelled with this plugin."""


@hookimpl(trylast=True)
def register_providers(register: Register):
    register("vad", "silero", build, preload=("livekit.plugins.silero",), **table(OPTIONS))


@functools.cache
def _load(**kwargs: Any) -> Any:
    from livekit.plugins import silero

    return silero.VAD.load(**kwargs)


def build(options: Mapping[str, Any], runtime: Runtime) -> Any:
    return _load(
        min_speech_duration=options["min_speech_duration"],
        min_silence_duration=options["min_silence_duration"],
        activation_threshold=options["activation_threshold"],
        prefix_padding_duration=options["prefix_padding_duration"],
        force_cpu=options["force_cpu"],
        sample_rate=options["sample_rate"],
    )
