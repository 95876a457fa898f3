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

from collections.abc import Callable, Iterable

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
    """The loudest NEEDLE-long stretch of each STEP of the text's voice."""
    n, step = round(NEEDLE * audio.RATE), round(STEP * audio.RATE)
    start = round(audio.trailing_silence(pcm[::-1]) * audio.RATE)  # the first voiced sample
    end = len(pcm) - round(audio.trailing_silence(pcm) * audio.RATE)
    voice = pcm[start:end].astype(np.float64)
    if len(voice) < n:
        return []
    energy = np.convolve(voice**2, np.ones(n), mode="valid")  # energy of the stretch from each sample
    out = []
    for at in range(0, len(energy), step):
        best = at + int(np.argmax(energy[at : at + step]))
        # voice only: a near-silent stretch (between two words) could be found in other sounds
        if np.sqrt(energy[best] / n) >= VOICED:
            out.append(pcm[start + best : start + best + n].astype("<i2").tobytes())
    return out


def known_transcripts(spoken: Iterable[tuple[str, np.ndarray]]) -> Callable[[bytes], str]:
    """A recognizer of 16 kHz mono s16le utterances that knows `spoken`: (text, its audio) pairs,
    a text once per voice that says it."""
    needles = [(text, _needles(pcm)) for text, pcm in spoken if len(pcm)]

    def recognize(pcm_16k: bytes) -> str:
        found: dict[str, set[int]] = {}
        complete: dict[str, set[int]] = {}
        for text, ns in needles:
            at = [a for needle in ns if (a := _find(pcm_16k, needle)) >= 0]
            if at:
                found[text] = found.get(text, set()) | set(at)
            if at and len(at) == len(ns):
                complete[text] = complete.get(text, set()) | set(at)
        # a text said whole wins over texts only partly found in it (one voice says "thank you"
        # as the start of its "thank you very much"); with none whole, the parts heard so far
        # name their texts (an interim result)
        said = complete or found
        texts = [
            (min(at), text)
            for text, at in said.items()
            if not any(other != text and at < o for other, o in said.items())
        ]
        return without_fillers(" ".join(text for _, text in sorted(texts)))

    return recognize


def _find(haystack: bytes, needle: bytes) -> int:
    """Where `needle` starts in `haystack` on a sample boundary (not across two samples), or -1."""
    at = haystack.find(needle)
    while at > 0 and at % 2:
        at = haystack.find(needle, at + 1)
    return at
