"""`bench`'s recognizer names what was said from the samples themselves: every text of the corpus,
wherever its clip sits in an utterance and however much of it the utterance holds, and nothing
for the sounds that are no text."""

from __future__ import annotations

import numpy as np
import pytest

from handler import audio
from handler.registry import load_checked
from handler.sim import scenario
from handler.sim.clips import Sounds, make_sounds
from handler.sim.transcripts import known_transcripts
from handler.words import without_fillers

_sounds: dict[str, Sounds] = {}


async def corpus() -> dict[str, Sounds]:
    if not _sounds:
        settings, registry = load_checked("dev")
        for name in scenario.corpus_names():
            sc = scenario.load(scenario.resolve(f"corpus/{name}"))
            _sounds[name] = await make_sounds(sc, registry, settings)
    return _sounds


def in_utterance(pcm: np.ndarray, lead: int) -> bytes:
    """As the Soniox server cuts it: silence before (any sample count) and after."""
    return np.concatenate([np.zeros(lead, np.int16), pcm, np.zeros(3200, np.int16)]).astype("<i2").tobytes()


@pytest.mark.parametrize("lead", [0, 1, 161, 3333])
async def test_every_corpus_text_is_named_from_its_own_audio_and_fillers_are_left_out(lead: int) -> None:
    sounds = await corpus()
    # every voice's audio of a text: "tell me a story" is said in five of them
    spoken = [(text, pcm) for s in sounds.values() for text, pcm in s.spoken.items()]
    recognize = known_transcripts(spoken)
    for text, pcm in spoken:
        assert recognize(in_utterance(pcm, lead)) == without_fillers(text), text
    assert without_fillers("uh huh, uh huh") == without_fillers("mm-hmm, mm-hmm") == ""


async def test_part_of_an_utterance_names_its_text_and_two_parts_name_both_in_order() -> None:
    sounds = await corpus()
    recognize = known_transcripts([(t, p) for s in sounds.values() for t, p in s.spoken.items()])
    story = sounds["pause_order_number"]
    first = story.spoken["my order number is"]
    # the second half of a clip alone (a stream that missed the start)
    assert recognize(in_utterance(first[len(first) // 2 :], 0)) == "my order number is"
    # the whole mid-sentence-pause turn as one utterance: both parts, in the order said
    assert recognize(in_utterance(story.clips[0], 80)) == "my order number is four two seven"


async def test_sounds_that_are_no_text_are_heard_as_nothing() -> None:
    sounds = await corpus()
    recognize = known_transcripts([(t, p) for s in sounds.values() for t, p in s.spoken.items()])
    for name in ("noise_coughs", "noise_traffic", "noise_babble", "noise_tv"):
        for pcm in sounds[name].clips[1:-1]:  # the sounds during the first reply
            assert recognize(in_utterance(pcm, 17)) == "", name
    assert recognize(in_utterance(audio.noise_burst(1.0, -12), 0)) == ""
