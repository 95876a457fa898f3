"""Where Smart Turn's model and feature extractor are: two files of the installed `pipecat-ai`
wheel, found from the distribution's metadata alone (nothing of pipecat is imported) and checked
against the reviewed release's SHA-256s. Light: the plugin reads it to say whether the provider
can run; the engine to load the model (the checked bytes)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

DISTRIBUTION = "pipecat-ai"
MODEL = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
FEATURES = "pipecat/audio/turn/smart_turn/_whisper_features.py"
INSTALL = "pip install 'voice-handler[smart-turn]'"
REVIEWED = "pip install 'pipecat-ai==1.14.0'"
SHA256 = {
    MODEL: "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
    FEATURES: "139b047d10dee42ad5b4894489012e515a882d8f5e2bffe8ad27b30728fc9968",
}
"""The two files as pipecat-ai 1.14.0's wheel ships them (its RECORD lists the same digests): the
model is read and the extractor is executed in the job process, so a file that differs (another
release, a tampered install) is refused by name instead of run. A pipecat-ai release that changes
either file needs its digest reviewed and entered here (and the smart-turn extra's pin moved)."""


def model_files(distribution: str = DISTRIBUTION) -> tuple[Path, Path] | str:
    """The installed wheel's model and feature extractor, or why they cannot be found."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return (
            "Smart Turn needs the smart-turn extra, which is not installed (the model ships in "
            f"the {distribution} wheel): {INSTALL}"
        )
    files = Path(str(dist.locate_file(MODEL))), Path(str(dist.locate_file(FEATURES)))
    missing = [f for f in files if not f.is_file()]
    if missing:
        return (
            f"{distribution} {dist.version} is installed but has no {missing[0].name} "
            f"(looked for {missing[0]}); install a version that ships it: {INSTALL}"
        )
    for name, path in zip((MODEL, FEATURES), files, strict=True):
        try:
            read_verified(path, SHA256[name])
        except ChecksumError as e:
            return f"{e} ({distribution} {dist.version}); install the reviewed release: {REVIEWED}"
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
