"""Simulation scenarios: a TOML file of user turns, pauses and sounds made during the agent's reply.

    name = "qa"                                   # shown in the report
    description = "..."                           # optional
    phrases = ["..."]                             # optional extra phrases for the offline recognizer
    user_voice = "en-us"                          # optional espeak voice for text turns
    user_rate = 175                               # optional speaking rate of text turns (words/min)

    [[turns]]
    say = "what time do you open"                 # text the local TTS speaks as 16 kHz user audio,
    # wav = "audio/question.wav"                  # ...or a WAV file (relative to the scenario file)
    # say = ["my order number is", "four two seven"]   # ...or parts with a pause between them:
    # hesitation = 1.0                            # s of silence between the parts (mid-sentence pause)
    pause = 1.0                                   # s of silence before the turn (default 0.5)

    [[turns.during_reply]]                        # sounds while the agent answers this turn
    kind = "babble"                               # noise | babble | cough | backchannel | barge_in
    at = 0.8                                      # s after the agent starts speaking
    duration = 1.0                                # noise/babble/cough length in s
    level = -18                                   # noise/babble/cough level in dBFS
    # say = "uh-huh" / wav = "..."                # backchannel and barge_in: the words (or a WAV)

    [expect]                                      # optional: what a correct run shows
    answered = 2                                  # scripted turns (barge-ins included) answered
    interruptions = 1                             # replies cut short (by barge-ins)
    false_interruptions = 0                       # replies paused by a sound and resumed
    premature_cutoffs = 0                         # replies begun while the user was mid-sentence

Kinds: `noise` is broadband noise with a syllable-like rhythm (a TV, traffic: a good VAD ignores
it); `babble` is speech-like sound with no words in it (synthesized speech played backwards: a
VAD hears speech, the recognizer finds no sentence; the classic false interruption); `cough` is a
short click; `backchannel` is a short spoken "uh-huh"; `barge_in` is a genuine new question.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handler.audio import read_wav

BUNDLED = Path(__file__).resolve().parent / "scenarios"
CORPUS = BUNDLED / "corpus"
"""The conversation corpus `bench` runs every preset over (`corpus/<name>` for `simulate`)."""
DEFAULT_SCENARIO = "qa"

EVENT_KINDS = ("noise", "babble", "cough", "backchannel", "barge_in")
_TOP = {"name", "description", "phrases", "user_voice", "user_rate", "turns", "expect"}
_TURN = {"say", "wav", "pause", "hesitation", "during_reply"}
_EVENT = {"kind", "at", "duration", "level", "say", "wav"}
_EXPECT = {"answered", "interruptions", "false_interruptions", "premature_cutoffs"}
_EVENT_DEFAULTS = {
    "noise": {"duration": 1.0, "level": -20.0},
    "babble": {"duration": 1.5, "level": -18.0},
    "cough": {"duration": 0.25, "level": -6.0},
}


class ScenarioError(Exception):
    """The scenario file cannot be used; every problem, each naming its place in the file."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


@dataclass(frozen=True)
class Event:
    kind: str
    at: float
    duration: float = 0.0
    level: float = 0.0
    say: str | None = None
    wav: Path | None = None

    @property
    def spoken(self) -> bool:
        return self.kind in ("backchannel", "barge_in")


@dataclass(frozen=True)
class Turn:
    say: str | None
    """Everything the user says in the turn (the parts joined)."""
    wav: Path | None
    pause: float
    during_reply: tuple[Event, ...] = ()
    parts: tuple[str, ...] = ()
    """The spoken parts of a text turn, `hesitation` seconds of silence between them."""
    hesitation: float = 0.0


@dataclass(frozen=True)
class Scenario:
    path: Path
    name: str
    description: str
    turns: tuple[Turn, ...]
    phrases: tuple[str, ...] = ()
    user_voice: str = "en-us"
    user_rate: int | None = None
    """Words per minute of the user's text turns; None: the `local` TTS's rate."""
    expect: dict[str, int] = field(default_factory=dict)

    def recognizer_phrases(self) -> list[str]:
        """Everything a user says in this scenario, for the offline recognizer's language model
        (a turn with a mid-sentence pause gives its whole sentence and each part)."""
        said = [t.say for t in self.turns if t.say]
        said += [p for t in self.turns if len(t.parts) > 1 for p in t.parts]
        said += [e.say for t in self.turns for e in t.during_reply if e.say]
        return list(dict.fromkeys([*said, *self.phrases]))


def resolve(name_or_path: str | None) -> Path:
    """A bundled scenario by name (`qa`, `noisy`, `barge_in`, `corpus/<name>`) or a path to a
    TOML file."""
    name = name_or_path or DEFAULT_SCENARIO
    bundled = BUNDLED / f"{name}.toml"
    if bundled.is_file() and not Path(name).suffix:
        return bundled
    return Path(name)


def bundled_names() -> list[str]:
    """The bundled scenarios, the corpus's conversations among them as `corpus/<name>`."""
    return _top_names() + [f"corpus/{n}" for n in corpus_names()]


def _top_names() -> list[str]:
    return sorted(p.stem for p in BUNDLED.glob("*.toml"))


def corpus_names() -> list[str]:
    return sorted(p.stem for p in CORPUS.glob("*.toml"))


def _unknown(where: str, keys: set[str], allowed: set[str]) -> list[str]:
    out = []
    for k in sorted(keys - allowed):
        hint = difflib.get_close_matches(k, sorted(allowed), n=1)
        out.append(
            f"{where}: unknown key {k!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else f"; allowed: {', '.join(sorted(allowed))}")
        )
    return out


def _number(where: str, value: Any, lo: float, hi: float, problems: list[str]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        problems.append(f"{where} = {value!r}: must be a number from {lo} to {hi}")
        return lo
    return float(value)


def _speech(
    where: str, raw: dict[str, Any], base: Path, problems: list[str]
) -> tuple[str | None, Path | None]:
    say, wav = raw.get("say"), raw.get("wav")
    if (say is None) == (wav is None):
        problems.append(f"{where}: give exactly one of 'say' (text) or 'wav' (a file)")
        return None, None
    if say is not None and (not isinstance(say, str) or not say.strip()):
        problems.append(f"{where}.say = {say!r}: must be non-empty text")
        return None, None
    if wav is not None and not isinstance(wav, str):
        problems.append(f"{where}.wav = {wav!r}: must be a file path")
        return None, None
    return (say.strip() if say else None), ((base / wav) if wav else None)


def load(path: Path) -> Scenario:
    if not path.is_file():
        raise ScenarioError(
            path,
            [
                f"scenario not found; bundled scenarios: {', '.join(_top_names())}, corpus/NAME with NAME "
                f"one of {', '.join(corpus_names())}, or give a .toml path"
            ],
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ScenarioError(path, [f"not valid TOML: {e}"]) from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ScenarioError(
            path, ["nested too deeply to read (arrays or tables inside each other)"]
        ) from None
    problems = _unknown("scenario", set(raw), _TOP)
    base = path.parent
    turns_raw = raw.get("turns", [])
    if not isinstance(turns_raw, list) or not turns_raw:
        problems.append("no [[turns]]: a scenario needs at least one user turn")
        turns_raw = []
    turns = []
    for i, t in enumerate(turns_raw, 1):
        where = f"turns[{i}]"
        if not isinstance(t, dict):
            problems.append(f"{where}: must be a table")
            continue
        problems += _unknown(where, set(t), _TURN)
        parts: tuple[str, ...] = ()
        if isinstance(t.get("say"), list):
            parts = tuple(p.strip() for p in t["say"] if isinstance(p, str) and p.strip())
            if len(parts) != len(t["say"]) or len(parts) < 2:
                problems.append(f"{where}.say = {t['say']!r}: a list must hold two or more non-empty texts")
            t = {**t, "say": " ".join(parts) or "-"}
        say, wav = _speech(where, t, base, problems)
        if say is not None and not parts:
            parts = (say,)
        hesitation = _number(f"{where}.hesitation", t.get("hesitation", 0.0), 0.0, 10.0, problems)
        if len(parts) > 1 and not hesitation:
            problems.append(f"{where}: a turn said in parts needs 'hesitation' (seconds between them)")
        pause = _number(f"{where}.pause", t.get("pause", 0.5), 0.0, 60.0, problems)
        events = []
        during = t.get("during_reply", [])
        if not isinstance(during, list):
            problems.append(f"{where}.during_reply: must be a list of [[turns.during_reply]] tables")
            during = []
        for j, raw_event in enumerate(during, 1):
            ew = f"{where}.during_reply[{j}]"
            if not isinstance(raw_event, dict):
                problems.append(f"{ew}: must be a table")
                continue
            problems += _unknown(ew, set(raw_event), _EVENT)
            kind = raw_event.get("kind")
            if kind not in EVENT_KINDS:
                problems.append(f"{ew}.kind = {kind!r}: must be one of {', '.join(EVENT_KINDS)}")
                continue
            at = _number(f"{ew}.at", raw_event.get("at", 0.5), 0.0, 60.0, problems)
            if kind in ("backchannel", "barge_in"):
                esay, ewav = _speech(ew, raw_event, base, problems)
                events.append(Event(kind, at, say=esay, wav=ewav))
            else:
                d = {
                    **_EVENT_DEFAULTS[kind],
                    **{k: raw_event[k] for k in ("duration", "level") if k in raw_event},
                }
                events.append(
                    Event(
                        kind,
                        at,
                        duration=_number(f"{ew}.duration", d["duration"], 0.01, 10.0, problems),
                        level=_number(f"{ew}.level", d["level"], -90.0, 0.0, problems),
                    )
                )
        turns.append(Turn(say, wav, pause, tuple(sorted(events, key=lambda ev: ev.at)), parts, hesitation))
    expect = raw.get("expect", {})
    if not isinstance(expect, dict):
        problems.append("expect: must be a table")
        expect = {}
    problems += _unknown("expect", set(expect), _EXPECT)
    for k, v in expect.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            problems.append(f"expect.{k} = {v!r}: must be a whole number 0 or above")
    phrases = raw.get("phrases", [])
    if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
        problems.append(f"phrases = {phrases!r}: must be a list of strings")
        phrases = []
    rate = raw.get("user_rate")
    if rate is not None:
        rate = int(_number("user_rate", rate, 80, 450, problems))
    if problems:
        raise ScenarioError(path, problems)
    return Scenario(
        path=path,
        name=str(raw.get("name", path.stem)),
        description=str(raw.get("description", "")),
        turns=tuple(turns),
        phrases=tuple(phrases),
        user_voice=str(raw.get("user_voice", "en-us")),
        user_rate=rate,
        expect=dict(expect),
    )


def check_audio_files(scenario: Scenario) -> None:
    """Read every WAV the scenario names before anything starts (AudioFileError on the first bad)."""
    for t in scenario.turns:
        for wav in [t.wav, *(e.wav for e in t.during_reply)]:
            if wav is not None:
                read_wav(wav)
