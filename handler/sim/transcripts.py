"""Known transcripts: a recognizer for the Soniox server that names what was said by finding each
spoken text's own samples in the utterance, instead of decoding speech.

The simulator places every clip on the input's sample timeline unchanged (io.py), and livekit hands
the STT those very samples at 16 kHz, so a stretch of a spoken text's audio appears byte for byte
in any utterance that holds it. Finding it costs a `bytes.find` per text, where pocketsphinx costs
a decode per interim: with a dozen conversations at once, recognition no longer dominates the CPU,
and what a preset is measured on is turn-taking, not the offline recognizer's word errors. A sound
that is no text (noise, babble, a cough) matches nothing and is heard as nothing; fillers are left
out (`handler.words`), as cloud recognizers do. A sound mixed with another (overlapping clips)
would not match: the corpus never overlaps them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from handler import audio
from handler.words import without_fillers

NEEDLE = 0.04
"""Seconds of a text's audio looked for at a time."""
VOICED = 32768 * 10 ** (-35 / 20)
"""RMS a stretch needs to be looked for (-35 dBFS)."""
STEP = 0.2
"""A needle every STEP seconds of the text's voice: any one found names the text, so an utterance
that holds only part of it (an interim result, a stream that missed its first moments) still
does, as a streaming recognizer would."""


def _needles(pcm: np.ndarray) -> list[bytes]:
    n, step = round(NEEDLE * audio.RATE), round(STEP * audio.RATE)
    start = round(audio.trailing_silence(pcm[::-1]) * audio.RATE)  # the first voiced sample
    end = len(pcm) - round(audio.trailing_silence(pcm) * audio.RATE)
    out = []
    for at in range(start, max(start + 1, end - n), step):
        needle = pcm[at : at + n]
        # voice only: a near-silent stretch (between two words) could be found in other sounds
        if np.sqrt(np.mean(needle.astype(np.float64) ** 2)) >= VOICED:
            out.append(needle.astype("<i2").tobytes())
    return out


def known_transcripts(spoken: Mapping[str, np.ndarray]) -> Callable[[bytes], str]:
    """A recognizer of 16 kHz mono s16le utterances that knows `spoken` (text -> its audio)."""
    needles = [(text, _needles(pcm)) for text, pcm in spoken.items() if len(pcm)]

    def recognize(pcm_16k: bytes) -> str:
        found: dict[str, set[int]] = {}
        for text, ns in needles:
            if at := {a for needle in ns if (a := _find(pcm_16k, needle)) >= 0}:
                found[text] = at
        # a text whose audio is the start of another's ("thank you" in "thank you very much", if
        # the voice says both alike) is that other text
        said = [
            (min(at), text)
            for text, at in found.items()
            if not any(other != text and at <= o and len(o) > len(at) for other, o in found.items())
        ]
        return without_fillers(" ".join(text for _, text in sorted(said)))

    return recognize


def _find(haystack: bytes, needle: bytes) -> int:
    """Where `needle` starts in `haystack` on a sample boundary (not across two samples), or -1."""
    at = haystack.find(needle)
    while at > 0 and at % 2:
        at = haystack.find(needle, at + 1)
    return at
