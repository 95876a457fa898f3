"""Every bundled scenario's sounds, fed straight through the real silero VAD stream (no real time),
at every phase against the VAD's inference windows: each is, or is not, speech long enough to
pause the agent, with margin on both sides of every environment's threshold.

Why this proves the real-time outcome: livekit pauses a reply when a VAD inference reports
`speech_duration >= interruption.min_duration` (agent_activity.on_vad_inference_done), and the VAD
decides from samples alone (512-sample windows at 16 kHz, durations counted in windows). The
simulator places a clip on the input's sample timeline at a whole 10 ms tick (160 samples), so the
clip can start at any multiple of gcd(160, 512) = 32 samples against the windows: the phases
tested here are all the phases a run can produce.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import BURST, BURST_MIN_INTERRUPTION, BURST_THRESHOLDS
from livekit import rtc
from livekit.agents import vad as lkvad

from handler import audio
from handler.cli.conversation import OFFLINE_STACK
from handler.config import Settings
from handler.pipeline.runtime import Runtime
from handler.pipeline.session import min_interruption_duration
from handler.registry import Registry, load_checked
from handler.sim import scenario
from handler.sim.clips import make_clips
from handler.sim.io import SAMPLES
from handler.words import without_fillers

ENVIRONMENTS = ("dev", "fast", "stable", "production")
WINDOW = 512
"""silero's inference window at 16 kHz."""
PHASES = range(0, WINDOW, 32)
MARGIN = 0.2
"""Seconds of speech a sound must clear a threshold by, either way (a quarter of the 0.8 s one)."""
PAUSES = {"backchannel": True, "barge_in": True, "noise": False, "cough": False}
"""What each kind of sound must do to a reply under way. Babble depends on its length (a snatch
of chatter is not speech, a television talking on is): either way, clear of the threshold."""


@dataclass(frozen=True)
class VadView:
    starts: int
    """START_OF_SPEECH events."""
    peak: float
    """The largest speech_duration any inference reported: what livekit compares."""


LEAD = audio.RATE // 2
"""Silence before a clip: the model's state settles within a few windows of silence."""
TAIL = audio.RATE
"""Silence after it: outlasts every environment's `vad.min_silence_duration` (at most 0.5 s) with
room for the model's decay, so each speech the VAD opens it also ends (`vad_view` checks), and
the largest speech_duration, counted up to that end, is final."""


async def vad_view(vad: lkvad.VAD, pcm: np.ndarray, phase: int) -> VadView:
    """The clip after LEAD (+ phase samples) of silence and before TAIL of it, in 10 ms frames."""
    signal = np.concatenate([np.zeros(LEAD + phase, np.int16), pcm, np.zeros(TAIL, np.int16)])
    stream = vad.stream()
    for i in range(0, len(signal), SAMPLES):
        chunk = signal[i : i + SAMPLES]
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), audio.RATE, 1, len(chunk)))
    stream.end_input()
    starts, ends, peak = 0, 0, 0.0
    async for ev in stream:
        if ev.type == lkvad.VADEventType.START_OF_SPEECH:
            starts += 1
        elif ev.type == lkvad.VADEventType.END_OF_SPEECH:
            ends += 1
        elif ev.type == lkvad.VADEventType.INFERENCE_DONE:
            peak = max(peak, ev.speech_duration)
    await stream.aclose()
    assert ends == starts, f"the VAD still heard speech at the end of TAIL ({starts} starts, {ends} ends)"
    return VadView(starts, peak)


LEADS = range(int(0.25 * audio.RATE), int(0.75 * audio.RATE), 160)
"""Silence before a sound in the segment the recognizer gets: the VAD keeps 0.5 s of audio before
the speech it detected, and where it detects the start moves with the sound's loudness and the
window phase."""

_views: dict[tuple, list[VadView]] = {}
_clips: dict[str, list[np.ndarray]] = {}


@functools.cache
def configured(env: str) -> tuple[Settings, Registry]:
    """`env`'s VAD and turn settings, with the offline stack standing in for the cloud stages."""
    return load_checked(env, overrides=OFFLINE_STACK, overrides_source="test")


async def views(env: str, pcm: np.ndarray) -> tuple[list[VadView], float]:
    """The VAD's view of a clip at every phase, with `env`'s VAD, and `env`'s pause threshold.
    Views are computed once per VAD configuration and clip (environments often share a VAD)."""
    settings, registry = configured(env)
    key = (repr(sorted(settings.section("vad").items())), pcm.tobytes())
    if key not in _views:
        vad = registry.build("vad", settings, Runtime(settings, None, None))
        _views[key] = [await vad_view(vad, pcm, phase) for phase in PHASES]
    return _views[key], min_interruption_duration(settings)


async def clips_of(path: Path) -> list[np.ndarray]:
    if str(path) not in _clips:
        settings, registry = load_checked("dev")
        _clips[str(path)] = await make_clips(scenario.load(path), registry, settings)
    return _clips[str(path)]


def sounds() -> list[tuple[str, int]]:
    """(bundled scenario, index of a clip in it) for every sound made during a reply."""
    out = []
    for name in scenario.bundled_names():
        sc = scenario.load(scenario.resolve(name))
        i = 0
        for turn in sc.turns:
            i += 1
            for _ in turn.during_reply:
                out.append((name, i))
                i += 1
    return out


async def event_text(name: str, index: int) -> str:
    sc = scenario.load(scenario.resolve(name))
    sounds = [s for t in sc.turns for s in [t, *t.during_reply]]
    return getattr(sounds[index], "say", None) or ""


async def clip_and_kind(name: str, index: int) -> tuple[np.ndarray, str]:
    sc = scenario.load(scenario.resolve(name))
    clips = await clips_of(scenario.resolve(name))
    kinds = [k for t in sc.turns for k in ["turn", *(e.kind for e in t.during_reply)]]
    return clips[index], kinds[index]


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("name,index", sounds())
async def test_each_sound_during_a_reply_pauses_the_agent_or_not_at_every_vad_phase(
    name: str, index: int, env: str
) -> None:
    pcm, kind = await clip_and_kind(name, index)
    settings, _ = configured(env)
    if min_words := settings.get("turn.min_interruption_words"):
        # livekit pauses only once the transcript holds that many words (agent_activity's
        # _interrupt_by_audio_activity): the words decide, not the VAD; fillers carry none
        said = await event_text(name, index)
        words = len(without_fillers(said).split())
        assert (words >= min_words) == (kind == "barge_in"), (kind, said, min_words)
        return
    seen, threshold = await views(env, pcm)
    peaks = [v.peak for v in seen]
    pauses = PAUSES.get(kind, min(peaks) >= threshold + MARGIN)
    if pauses:
        assert all(v.starts >= 1 for v in seen), (kind, seen)
        assert min(peaks) >= threshold + MARGIN, (kind, threshold, peaks)
    else:
        assert max(peaks) <= threshold - MARGIN, (kind, threshold, peaks)


@pytest.mark.parametrize("name", scenario.bundled_names())
async def test_every_scripted_turn_is_heard_as_speech_at_every_vad_phase(name: str) -> None:
    sc = scenario.load(scenario.resolve(name))
    clips = await clips_of(scenario.resolve(name))
    i = 0
    for turn in sc.turns:
        seen, _ = await views("dev", clips[i])
        missed = [phase for phase, v in zip(PHASES, seen, strict=True) if v.starts < 1]
        assert not missed, (name, turn.say, len(clips[i]), hash(clips[i].tobytes()), missed, seen)
        i += 1 + len(turn.during_reply)


async def test_the_threshold_tests_burst_sits_between_its_two_thresholds_at_every_phase() -> None:
    clips = await clips_of(BURST)
    seen, _ = await views("dev", clips[1])
    peaks = [v.peak for v in seen]
    for threshold, pauses in BURST_THRESHOLDS.items():
        needed = BURST_MIN_INTERRUPTION * threshold / 0.5
        if pauses:
            assert min(peaks) >= needed + MARGIN, (threshold, peaks)
        else:
            assert max(peaks) <= needed - MARGIN, (threshold, peaks)


async def heard(sc: scenario.Scenario, pcm: np.ndarray) -> set[str]:
    """What the scenario's recognizer (the `local` STT with the scenario's phrases, as `simulate`
    builds it) makes of a sound, at every lead of silence the VAD's segment can give it."""
    settings, registry = load_checked("dev")
    settings = settings.with_overrides({"stt.local.phrases": sc.recognizer_phrases()}, "test")
    stt = registry.build("stt", settings, Runtime(settings, None, None), name="local")
    out = set()
    for lead in LEADS:
        signal = np.concatenate([np.zeros(lead, np.int16), pcm, np.zeros(audio.RATE // 2, np.int16)])
        event = await stt.recognize(rtc.AudioFrame(signal.tobytes(), audio.RATE, 1, len(signal)))
        out.add(event.alternatives[0].text)
    return out


def backchannels() -> list[tuple[Path, int]]:
    """(scenario file, clip index) of every backchannel of fillers only ("uh huh", "mm-hmm"; a
    "yeah" or an "okay" is a word): the bundled scenarios' and the burst's. Not the corpus's:
    `bench` hears them with known transcripts, where fillers carry no words by construction
    (tests/test_known_transcripts.py); pocketsphinx hears a word in two of them at some leads, so
    under `simulate --offline` those two may stop the agent."""
    out = []
    top = [n for n in scenario.bundled_names() if not n.startswith("corpus/")]
    for path in [*(scenario.resolve(n) for n in top), BURST]:
        sc = scenario.load(path)
        sounds = [s for t in sc.turns for s in [t, *t.during_reply]]
        out += [
            (path, i)
            for i, s in enumerate(sounds)
            if getattr(s, "kind", "") == "backchannel" and not without_fillers(s.say or "")
        ]
    return out


@pytest.mark.parametrize("path,index", backchannels(), ids=lambda v: getattr(v, "stem", str(v)))
async def test_a_backchannel_carries_no_words_for_the_recognizer_wherever_the_vad_cuts_it(
    path: Path, index: int
) -> None:
    # a word in it would interrupt the agent for good (a transcript), not pause it
    sc = scenario.load(path)
    pcm = (await clips_of(path))[index]
    assert await heard(sc, pcm) == {""}
