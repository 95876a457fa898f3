"""First audio from the reply's first phrase, not its first full sentence.

A streaming TTS plugin hands the provider text in the pieces its sentence tokenizer cuts
(livekit's ElevenLabs plugin: blingfire sentences, each sent with a flush). livekit's buffered
sentence stream emits a sentence only once the next one has begun (or the text ends), so the
provider starts speaking only after the LLM has written the whole first sentence, and a
one-sentence reply only after the LLM has finished. `FirstPhraseTokenizer` wraps any sentence
tokenizer: the first piece of each segment is its first phrase (the text up to the first
comma, semicolon, colon, dash or sentence end, or its first `words` words, whichever comes
first), emitted as soon as the word that ends it is complete; the rest goes by sentence, as
before (the first phrase's audio covers the time the rest takes to arrive and synthesize).
Configured per provider (`tts.elevenlabs.first_phrase_words`).
"""

from __future__ import annotations

import re

from livekit.agents import tokenize
from livekit.agents.tokenize.tokenizer import SentenceStream, TokenData

_WORD = re.compile(r"\S+")
_CLAUSE_END = re.compile(r"[,;:.!?\u2026\u2013\u2014-][\"')\]\u201d\u2019]*$")
"""A word that ends a clause: a comma, semicolon, colon, sentence end, ellipsis or dash (plus
closing quotes or brackets)."""


def first_phrase_end(text: str, words: int) -> int | None:
    """Where the first phrase of `text` ends (an index into it), or None while it may go on. A
    word counts once whitespace follows it (an LLM streams sub-word tokens: "Sun" may become
    "Sunday"); the phrase ends after the first word that closes a clause or after `words` words."""
    for n, word in enumerate(_WORD.finditer(text), 1):
        if word.end() == len(text):
            return None  # the last word may still grow
        if n >= words or _CLAUSE_END.search(word.group()):
            return word.end()
    return None


class FirstPhraseStream(SentenceStream):
    """A sentence stream whose segments start with their first phrase (module docstring). All
    text goes through the inner stream, in order: the first phrase is pushed and flushed at
    once (a flush emits what the inner stream holds), the rest is pushed as it comes."""

    def __init__(self, inner: SentenceStream, words: int) -> None:
        super().__init__()
        self._inner = inner
        self._words = words
        self._head: str | None = ""
        """The current segment's text while its first phrase is incomplete; None once sent."""

    def push_text(self, text: str) -> None:
        if self._head is None:
            self._inner.push_text(text)
            return
        self._head += text
        cut = first_phrase_end(self._head, self._words)
        if cut is None:
            return
        phrase, rest = self._head[:cut], self._head[cut:]
        self._head = None
        self._inner.push_text(phrase)
        self._inner.flush()
        if rest:
            self._inner.push_text(rest)

    def _release_head(self) -> None:
        if self._head:
            self._inner.push_text(self._head)
        self._head = ""

    def flush(self) -> None:
        self._release_head()  # a new segment starts with its own first phrase
        self._inner.flush()

    def end_input(self) -> None:
        self._release_head()
        self._inner.end_input()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __anext__(self) -> TokenData:
        return await self._inner.__anext__()


class FirstPhraseTokenizer(tokenize.SentenceTokenizer):
    """`inner` (livekit's blingfire sentence tokenizer by default) whose streams start each
    segment with its first phrase of at most `words` words; whole texts tokenize as `inner`."""

    def __init__(self, words: int, inner: tokenize.SentenceTokenizer | None = None) -> None:
        if words < 1:
            raise ValueError("words: at least 1")
        self.words = words
        self.inner = inner if inner is not None else tokenize.blingfire.SentenceTokenizer()

    def tokenize(self, text: str, *, language: str | None = None) -> list[str]:
        return self.inner.tokenize(text, language=language)

    def stream(self, *, language: str | None = None) -> SentenceStream:
        return FirstPhraseStream(self.inner.stream(language=language), self.words)
