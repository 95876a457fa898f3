"""Turn detection `smart-turn`: Smart Turn v3, an end-of-turn model that listens to the user's
audio, run offline in the job process (the engine: `handler_plugins.engines.smart_turn`).

Silence alone cannot tell "my order number is ..." from a finished question; the model can. When
it says "not finished" (probability below `threshold`) the turn is held open for up to
`max_endpointing_delay`; otherwise it ends after `min_endpointing_delay`, as with `vad`.

Options: `OPTIONS` below (`[turn.smart-turn]`, their defaults and why); its own
`max_endpointing_delay` wins over [turn]'s.

Needs the `smart-turn` extra (`pip install 'voice-handler[smart-turn]'`): the model ships in
the `pipecat-ai` wheel, of which only two files are used (see the engine's docstring).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

from handler.api import Register, Runtime, hookimpl, table
from handler_plugins.engines import smart_turn_files
from handler_plugins.engines.smart_turn_files import INSTALL

DISTRIBUTION = smart_turn_files.DISTRIBUTION
"""The wheel the model ships in (read where the provider is checked: a test names another)."""

BLAS_LIMITER = "threadpoolctl"
"""Holds numpy's BLAS to one thread in a process that runs the model (the engine's reason)."""
MAX_THREADS = 16


OPTIONS = """\
# Smart Turn v3, run offline in the job process; needs: pip install 'voice-handler[smart-turn]'
threshold = 0.1              # end-of-turn probability below which the user is mid-sentence: hold the turn
                             # up to max_endpointing_delay (0.5 held complete questions the model scored
                             # 0.16-0.30 for the whole hold; the pauses it does hear as unfinished score
                             # 0.01-0.06: `python measurements/smart_turn.py corpus`, docs/turn-detection.md)
threads = 1                  # CPU threads one prediction uses (predictions of a process run one at a time;
                             # 2 gained nothing here)
max_endpointing_delay = 2.0  # s this detector holds a turn the model calls unfinished, instead of [turn]'s
                             # 3.0: outlasts the corpus's longest pause (1.2 s) plus the VAD's 0.25 s to hear
                             # the user resume; a complete turn the model misjudges waits 1 s less (bench:
                             # complete-utterance TTFA p95 3210 -> 1629 ms with threshold 0.1)
"""
"""`[turn.smart-turn]`: this provider's options, their defaults and why. The lowest layer of the table:
every settings file changes them; `config show` lists them, labelled with this plugin."""


@hookimpl(trylast=True)
def register_providers(register: Register) -> None:
    register(
        "turn",
        "smart-turn",
        _build,
        **table(OPTIONS),
        validate=_validate,
        unavailable=_unavailable,
    )


def model_files() -> tuple[Path, Path] | str:
    """The installed wheel's model and feature extractor, or why they cannot be found."""
    return smart_turn_files.model_files(DISTRIBUTION)


def _unavailable() -> str | None:
    found = model_files()
    if isinstance(found, str):
        return found
    if importlib.util.find_spec(BLAS_LIMITER) is None:
        return f"Smart Turn needs {BLAS_LIMITER} (part of the smart-turn extra): {INSTALL}"
    return None


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _validate(options: Mapping[str, Any]) -> list[str]:
    problems = []
    threshold = options.get("threshold")
    if _number(threshold) and not 0.0 <= threshold <= 1.0:
        problems.append("threshold: must be a probability from 0.0 to 1.0")
    threads = options.get("threads")
    if isinstance(threads, int) and not isinstance(threads, bool) and not 1 <= threads <= MAX_THREADS:
        problems.append(f"threads: must be a whole number from 1 to {MAX_THREADS}")
    hold, least = options.get("max_endpointing_delay"), options.get("min_endpointing_delay")
    if _number(hold):
        if not 0.0 <= hold <= 30.0:
            problems.append("max_endpointing_delay: must be a number from 0.0 to 30.0 (s)")
        elif _number(least) and hold < least:
            problems.append(
                f"max_endpointing_delay: must not be below turn.min_endpointing_delay ({least!r})"
            )
    return problems


def _build(options: Mapping[str, Any], runtime: Runtime) -> Any:
    from handler_plugins.engines.smart_turn import SmartTurnDetector, load  # heavy: only when built

    if problems := _validate(options):
        raise ValueError("turn.smart-turn: " + "; ".join(problems))
    return SmartTurnDetector(load(options["threads"]), threshold=options["threshold"])
