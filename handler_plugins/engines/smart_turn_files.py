"""Where Smart Turn's model and feature extractor are: two files of the installed `pipecat-ai`
wheel, found from the distribution's metadata alone (nothing of pipecat is imported). Light: the
plugin reads it to say whether the provider can run; the engine to load the model."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

DISTRIBUTION = "pipecat-ai"
MODEL = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
FEATURES = "pipecat/audio/turn/smart_turn/_whisper_features.py"
INSTALL = "pip install 'voice-handler[smart-turn]'"


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
    return files
