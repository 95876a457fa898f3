"""Turn detection `smart-turn`: Smart Turn v3, an end-of-turn model that listens to the user's
audio, run offline in the job process (the engine: `handler_plugins.engines.smart_turn`).

Silence alone cannot tell "my order number is ..." from a finished question; the model can. When
it says "not finished" (probability below `threshold`) the turn is held open for up to
`max_endpointing_delay`; otherwise it ends after `min_endpointing_delay`, as with `vad`.

Options (`[default.turn.smart-turn]`; each default's reason is in settings.toml):
    threshold = 0.1     # end-of-turn probability below which the user is taken as mid-sentence
    threads = 1         # CPU threads one prediction uses
    max_endpointing_delay = 2.0  # this detector's longest hold (without the key: [turn]'s)

Needs the `smart-turn` extra (`pip install 'voice-handler[smart-turn]'`): the model ships in
the `pipecat-ai` wheel, of which only two files are used (see the engine's docstring).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, TypeGuard

from handler.hookspecs import hookimpl

DISTRIBUTION = "pipecat-ai"
MODEL = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
FEATURES = "pipecat/audio/turn/smart_turn/_whisper_features.py"
INSTALL = "pip install 'voice-handler[smart-turn]'"
BLAS_LIMITER = "threadpoolctl"
"""Holds numpy's BLAS to one thread in a process that runs the model (the engine's reason)."""
MAX_THREADS = 16
REVIEWED = "pip install 'pipecat-ai==1.14.0'"
SHA256 = {
    MODEL: "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
    FEATURES: "139b047d10dee42ad5b4894489012e515a882d8f5e2bffe8ad27b30728fc9968",
}
"""The two files as pipecat-ai 1.14.0's wheel ships them (its RECORD lists the same digests): the
model is read and the extractor is executed in the job process, so a file that differs (another
release, a tampered install) is refused by name instead of run. A pipecat-ai release that changes
either file needs its digest reviewed and entered here."""


@hookimpl(trylast=True)
def register_providers(register: Any) -> None:
    register(
        "turn",
        "smart-turn",
        _build,
        # the key this table may override; the registry puts [turn]'s value in its place when
        # the table leaves it out, so this default is never used
        options={"max_endpointing_delay": 3.0},
        validate=_validate,
        unavailable=_unavailable,
    )


def model_files() -> tuple[Path, Path] | str:
    """The installed wheel's model and feature extractor, or why they cannot be found. Reads the
    distribution's metadata only: nothing of pipecat is imported."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return (
            "Smart Turn needs the smart-turn extra, which is not installed (the model ships in "
            f"the {DISTRIBUTION} wheel): {INSTALL}"
        )
    files = Path(str(dist.locate_file(MODEL))), Path(str(dist.locate_file(FEATURES)))
    missing = [f for f in files if not f.is_file()]
    if missing:
        return (
            f"{DISTRIBUTION} {dist.version} is installed but has no {missing[0].name} "
            f"(looked for {missing[0]}); install a version that ships it: {INSTALL}"
        )
    for name, path in zip((MODEL, FEATURES), files, strict=True):
        try:
            read_verified(path, SHA256[name])
        except ChecksumError as e:
            return f"{e} ({DISTRIBUTION} {dist.version}); install the reviewed release: {REVIEWED}"
    return files


class ChecksumError(Exception):
    """A model file whose SHA-256 is not the reviewed one."""


def read_verified(path: Path, sha256: str) -> bytes:
    """The file's bytes, once, if their SHA-256 is `sha256` (what is checked is what is used:
    the caller loads these bytes, not the path again)."""
    import hashlib

    data = path.read_bytes()
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise ChecksumError(f"{path}: SHA-256 {found} is not the reviewed {sha256}; refusing to load it")
    return data


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


def _build(options: Mapping[str, Any], runtime: Any) -> Any:
    from handler_plugins.engines.smart_turn import SmartTurnDetector, load  # heavy: only when built

    if problems := _validate(options):
        raise ValueError("turn.smart-turn: " + "; ".join(problems))
    return SmartTurnDetector(load(options["threads"]), threshold=options["threshold"])
