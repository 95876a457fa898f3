"""What a simulated conversation reports: per scripted turn, the turn tracker's record (the same
record the metrics lines are written from) plus what only the simulator knows (what was said, the
audio it actually played, notes), and a summary computed with `handler.pipeline.turns`' functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from handler.pipeline.turns import TurnRecord, percentile, summarize

TIMINGS = (
    "ttfa",
    "ttfa_played",
    "end_of_turn_delay",
    "transcription_delay",
    "llm_ttft",
    "llm_ttfs",
    "tts_ttfb",
    "floor",
    "overhead",
)
BREAKDOWN = (
    "end_of_turn_delay",
    "llm_ttft",
    "llm_ttfs",
    "tts_ttfb",
    "floor",
    "ttfa",
    "ttfa_played",
    "overhead",
)


@dataclass
class SimTurn:
    n: int
    kind: str
    """"turn" for a scripted user turn, "barge_in" for speech that cut into a reply."""
    said: str
    speech_end: float = 0.0
    """Wall time of the last voiced sample the user sent."""
    ttfa_played: float | None = None
    """End of user speech (last voiced sample sent) -> first agent sample played, measured by
    the simulator on its own clock. `ttfa` (livekit's e2e_latency) is the canonical figure."""
    record: TurnRecord | None = None
    """The turn tracker's record of this turn; None when the agent never answered it."""
    premature_cutoffs: int = 0
    """Replies the agent began while the user was still saying this turn (mid-sentence)."""
    notes: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        # the record's fields read through (turn.ttfa, turn.interrupted, ...); unanswered turns
        # read as an empty record
        if name.startswith("_") or name == "record":
            raise AttributeError(name)
        return getattr(self.record or TurnRecord(n=self.n), name)

    @property
    def overhead(self) -> float | None:
        """What the handler and livekit add above the floor to the audio actually played."""
        floor = self.floor
        return None if floor is None or self.ttfa_played is None else self.ttfa_played - floor

    def to_dict(self) -> dict[str, Any]:
        r = self.record or TurnRecord(n=self.n)
        d: dict[str, Any] = {
            "n": self.n,
            "kind": self.kind,
            "said": self.said,
            "recognized": r.user_text,
            "reply": r.reply_text,
            "answered": r.answered if self.record is not None else False,
        }
        for k in TIMINGS:
            v = getattr(self, k)
            d[k] = None if v is None else round(v, 3)
        d |= {
            "interrupted": r.interrupted,
            "false_interruptions": r.false_interruptions,
            "retries": r.retries,
            "errors": r.errors,
            "premature_cutoffs": self.premature_cutoffs,
            "notes": self.notes,
        }
        return d


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words): Levenshtein distance over lower-cased words."""
    ref = _words(reference)
    hyp = _words(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1], len(ref)


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c in " '" else " " for c in text.lower()).split()


def _round(v: float | None, digits: int = 3) -> float | None:
    return None if v is None else round(v, digits)


@dataclass
class Report:
    scenario: str
    env: str
    providers: dict[str, str]
    turns: list[SimTurn]
    duration: float
    errors: list[str]
    expect: dict[str, int]
    settings: dict[str, Any]
    ended: str | None = None
    """Why the session ended before the scenario did (a stage down for good), or None."""
    agent_speech: float = 0.0
    """Seconds of agent audio actually played."""

    def summary(self) -> dict[str, Any]:
        records = [t.record for t in self.turns if t.record is not None]
        s = summarize(records, self.duration / 60)
        answered = sum(r.answered for r in records)
        edits = refs = 0
        for t in self.turns:
            e, r = word_errors(t.said, t.user_text)
            edits, refs = edits + e, refs + r
        return {
            "turns": len(self.turns),
            "answered": answered,
            "duration_s": round(self.duration, 2),
            "ttfa_p50": _round(s.ttfa_p50),
            "ttfa_p95": _round(s.ttfa_p95),
            "interruptions": s.interruptions,
            "false_interruptions": s.false_interruptions,
            "false_interruptions_per_min": s.false_interruptions_per_min,
            "premature_cutoffs": sum(t.premature_cutoffs for t in self.turns),
            "agent_speech_s": round(self.agent_speech, 2),
            "wer": round(edits / refs, 3) if refs else None,
            "errors": len(self.errors),
            "breakdown_p50": self.breakdown(),
        }

    def breakdown(self) -> dict[str, float | None]:
        """Median of each part of time to first audio over the turns that have it."""
        out: dict[str, float | None] = {}
        for name in BREAKDOWN:
            values = [v for t in self.turns if (v := getattr(t, name)) is not None]
            out[name] = _round(percentile(values, 50))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "env": self.env,
            "providers": self.providers,
            "settings": self.settings,
            "turns": [t.to_dict() for t in self.turns],
            "summary": self.summary(),
            "expect": self.expect,
            "errors": self.errors,
            "ended": self.ended,
        }
