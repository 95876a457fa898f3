"""Built-in STT `local`: offline speech recognition with pocketsphinx (bundled en-us model).

Non-streaming: a voice session wraps it in `stt.StreamAdapter` with the session's VAD
(`Agent.default.stt_node`), so each VAD speech segment is recognized as one utterance.

Options: `OPTIONS` below (`[stt.local]`, their defaults and why). `phrases` builds a small domain
language model (much more accurate, but it only knows these words); empty = the general en-us model.

Words missing from the pocketsphinx dictionary (names, digits) are left out of the domain
model with a warning: they cannot be recognized.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handler.api import Register, Runtime, hookimpl, table

OPTIONS = """\
phrases = []                           # expected user sentences: a domain language model (simulate adds the
                                       # scenario's)
drop_fillers = true                    # leave "uh", "hmm", "uh-huh" out of transcripts, as cloud recognizers
                                       # do
"""
"""`[stt.local]`: this provider's options, their defaults and why. The lowest layer of the table:
every settings file changes them; `config show` lists them, labelled with this plugin."""


@hookimpl(trylast=True)
def register_providers(register: Register) -> None:
    register(
        "stt",
        "local",
        _build,
        **table(OPTIONS),
        validate=_validate,
        preload=(f"{__package__}.engines.pocketsphinx_stt",),
    )


def _validate(options: Mapping[str, Any]) -> list[str]:
    phrases = options.get("phrases", [])
    if not isinstance(phrases, list | tuple) or not all(isinstance(p, str) for p in phrases):
        return ["phrases: must be a list of strings"]
    return []


def _build(options: Mapping[str, Any], runtime: Runtime) -> Any:
    from .engines.pocketsphinx_stt import LocalSTT  # heavy: only when built

    if problems := _validate(options):
        raise ValueError("stt.local: " + "; ".join(problems))
    return LocalSTT(phrases=tuple(options.get("phrases", ())), drop_fillers=options.get("drop_fillers", True))
