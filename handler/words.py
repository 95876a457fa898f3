"""Words a recognizer leaves out: fillers carry no words, as cloud recognizers treat them by
default. One list for the offline recognizer (pocketsphinx) and `bench`'s known transcripts."""

from __future__ import annotations

FILLERS = frozenset({"uh", "um", "uhm", "er", "erm", "ah", "hmm", "mm", "mhm", "huh", "uh-huh", "mm-hmm"})


def without_fillers(text: str) -> str:
    """`text` without its filler words (punctuation around a word ignored); an utterance of
    fillers only comes back empty."""
    return " ".join(w for w in text.split() if w.lower().strip(",.!?") not in FILLERS)
