"""What `bench` measures, from each conversation's report (`handler.sim.Report.to_dict()`) and the
scenario that declares what should have happened:

- TTFA: livekit's e2e latency per answered turn (end of user speech -> first agent audio);
- false interruptions: the agent stopped for a sound that was not a barge-in: a reply paused and
  resumed (livekit's false interruption), or a reply cut short in a turn with no barge-in in it
  (a backchannel "yeah" taken for a new turn); per minute of agent speech;
- barge-ins caught: replies cut short by the barge-in scripted into them;
- premature cut-offs: replies begun while the user was still saying the turn (mid-sentence);
- log lines per minute of conversation;
- whether each conversation went as it declares (`[expect]`);
- where the time goes: the p50 of each part of the time to first audio (`simulate`'s breakdown:
  end of turn, LLM first token and first text to the TTS, TTS first byte, their sum the floor, and
  the handler's overhead: the audio actually played minus the floor).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from handler.pipeline.turns import per_minute, percentile
from handler.sim.report import BREAKDOWN
from handler.sim.scenario import Scenario


@dataclass
class ConversationScore:
    scenario: str
    ttfas: list[float] = field(default_factory=list)
    false_interruptions: int = 0
    barge_ins: int = 0
    barge_ins_caught: int = 0
    premature_cutoffs: int = 0
    agent_speech_s: float = 0.0
    duration_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    unmet: list[str] = field(default_factory=list)
    """The scenario's expectations this run did not meet ("interruptions 1, got 0")."""
    paused_ttfas: list[float] = field(default_factory=list)
    """TTFA of the turns said with a mid-sentence pause (a subset of `ttfas`)."""
    paused_turns: int = 0
    paused_cutoffs: int = 0
    """Premature cut-offs in the turns said with a mid-sentence pause."""
    detection: str = ""
    """The turn detection the conversation ran with (turn.detection)."""
    parts: dict[str, list[float]] = field(default_factory=dict)
    """Each part of the time to first audio (`handler.sim.report.BREAKDOWN`), per turn that has it."""


def score(sc: Scenario, report: dict[str, Any]) -> ConversationScore:
    s = report["summary"]
    out = ConversationScore(
        scenario=report["scenario"],
        premature_cutoffs=s["premature_cutoffs"],
        agent_speech_s=s["agent_speech_s"],
        duration_s=s["duration_s"],
        errors=list(report["errors"]),
        detection=report["providers"].get("turn", ""),
    )
    scripted = iter(sc.turns)
    for turn in report["turns"]:
        if turn["ttfa"] is not None:
            out.ttfas.append(turn["ttfa"])
        for part in BREAKDOWN:
            if turn.get(part) is not None:
                out.parts.setdefault(part, []).append(turn[part])
        out.false_interruptions += turn["false_interruptions"]
        if turn["kind"] != "turn":
            continue
        scripted_turn = next(scripted)
        if len(scripted_turn.parts) > 1:  # said with a mid-sentence pause
            out.paused_turns += 1
            out.paused_cutoffs += turn["premature_cutoffs"]
            if turn["ttfa"] is not None:
                out.paused_ttfas.append(turn["ttfa"])
        barge_ins = sum(e.kind == "barge_in" for e in scripted_turn.during_reply)
        out.barge_ins += barge_ins
        if barge_ins:
            out.barge_ins_caught += min(barge_ins, int(turn["interrupted"]))
        elif turn["interrupted"]:
            out.false_interruptions += 1
    for key, want in sc.expect.items():
        got = s.get(key)
        if got != want:
            out.unmet.append(f"{key} {want}, got {got}")
    return out


@dataclass
class VariantScore:
    name: str
    env: str
    about: str
    overrides: dict[str, Any]
    conversations: list[ConversationScore]
    log_lines: int | None = None
    failed: list[str] = field(default_factory=list)
    eot_inference: list[float] = field(default_factory=list)
    """Seconds of each prediction of the end-of-turn model, as the provider measured it (smart-turn)."""

    @property
    def ttfas(self) -> list[float]:
        return [t for c in self.conversations for t in c.ttfas]

    @property
    def detection(self) -> str:
        return ",".join(sorted({c.detection for c in self.conversations})) or "-"

    def turn_detection(self) -> dict[str, Any]:
        """What an end-of-turn model changes: premature cut-offs in the turns said with a
        mid-sentence pause, TTFA of those turns and of every other (complete) utterance, and the
        model's own inference time."""
        paused = [t for c in self.conversations for t in c.paused_ttfas]
        complete = list(self.ttfas)
        for t in paused:  # the complete utterances: every timed turn but the paused ones
            complete.remove(t)
        return {
            "detection": self.detection,
            "paused_turns": sum(c.paused_turns for c in self.conversations),
            "paused_cutoffs": sum(c.paused_cutoffs for c in self.conversations),
            "complete_turns_timed": len(complete),
            "complete_ttfa_p50": _r(percentile(complete, 50)),
            "complete_ttfa_p95": _r(percentile(complete, 95)),
            "paused_ttfa_p50": _r(percentile(paused, 50)),
            "paused_ttfa_p95": _r(percentile(paused, 95)),
            "eot_predictions": len(self.eot_inference),
            "eot_inference_p50": _r4(percentile(self.eot_inference, 50)),
            "eot_inference_p95": _r4(percentile(self.eot_inference, 95)),
        }

    def summary(self) -> dict[str, Any]:
        ttfas = self.ttfas
        speech_min = sum(c.agent_speech_s for c in self.conversations) / 60
        minutes = sum(c.duration_s for c in self.conversations) / 60
        false = sum(c.false_interruptions for c in self.conversations)
        barge = sum(c.barge_ins for c in self.conversations)
        caught = sum(c.barge_ins_caught for c in self.conversations)
        return {
            "conversations": len(self.conversations),
            "turns_timed": len(ttfas),
            "ttfa_p50": _r(percentile(ttfas, 50)),
            "ttfa_p95": _r(percentile(ttfas, 95)),
            "ttfa_mean": _r(sum(ttfas) / len(ttfas)) if ttfas else None,
            "false_interruptions": false,
            "agent_speech_min": round(speech_min, 2),
            "false_interruptions_per_min": per_minute(false, speech_min) if speech_min else None,
            "barge_ins": barge,
            "barge_ins_caught": caught,
            "barge_ins_caught_pct": round(100 * caught / barge, 1) if barge else None,
            "premature_cutoffs": sum(c.premature_cutoffs for c in self.conversations),
            "log_lines": self.log_lines,
            "minutes": round(minutes, 2),
            "log_lines_per_min": round(self.log_lines / minutes, 1)
            if self.log_lines is not None and minutes
            else None,
            "as_declared": sum(not c.unmet for c in self.conversations),
            "errors": sum(len(c.errors) for c in self.conversations),
            "failed": len(self.failed),
            "turn_detection": self.turn_detection(),
            "breakdown_p50": {
                part: _r(percentile([v for c in self.conversations for v in c.parts.get(part, [])], 50))
                for part in BREAKDOWN
            },
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "env": self.env,
            "about": self.about,
            "overrides": self.overrides,
            "summary": self.summary(),
            "conversations": [asdict(c) for c in self.conversations],
            "failed": self.failed,
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _r4(v: float | None) -> float | None:
    return None if v is None else round(v, 4)
