"""`bench`'s output: one row per variant, the guide's before/after table, and whether each preset
earns its name on this run."""

from __future__ import annotations

from typing import Any

from handler.bench.score import VariantScore

GUIDE = {
    "average response time": ("3-5 s", "1-2 s"),
    "false interruptions": ("~2/min", "<1/min"),
    "log volume": ("500+ lines/min", "50-100 lines/min"),
}
"""The guide's "Benchmark Results": before, and after (expected, never measured)."""
BARGE_IN_TARGET = 95.0
PRODUCTION_VS_BEFORE = 0.5


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def _num(v: Any, fmt: str = "") -> str:
    return "-" if v is None else format(v, fmt)


def _width(scores: list[VariantScore], least: int) -> int:
    """The name column: `least`, or the longest variant name (`--variant` names can be long)."""
    return max([least, *(len(v.name) for v in scores)])


def table(scores: list[VariantScore]) -> list[str]:
    w = _width(scores, 12)
    lines = [
        f"{'variant':<{w}} {'ttfa p50':>8} {'ttfa p95':>8} {'false/min':>9} {'barge-ins caught':>16} "
        f"{'cut-offs':>8} {'log lines/min':>13} {'as declared':>11}",
    ]
    for v in scores:
        s = v.summary()
        caught = f"{s['barge_ins_caught']}/{s['barge_ins']} {_num(s['barge_ins_caught_pct'], '.0f')}%"
        declared = f"{s['as_declared']}/{s['conversations']}"
        lines.append(
            f"{v.name:<{w}} {_ms(s['ttfa_p50']):>8} {_ms(s['ttfa_p95']):>8} "
            f"{_num(s['false_interruptions_per_min'], '.2f'):>9} {caught:>16} {s['premature_cutoffs']:>8} "
            f"{_num(s['log_lines_per_min'], '.1f'):>13} {declared:>11}"
        )
    return lines


def breakdown(scores: list[VariantScore]) -> list[str]:
    """`simulate`'s "where the time goes", per variant (p50 of each part over its turns)."""
    cols = (
        ("end of turn", "end_of_turn_delay"),
        ("llm 1st tok", "llm_ttft"),
        ("llm 1st text", "llm_ttfs"),
        ("tts 1st", "tts_ttfb"),
        ("floor", "floor"),
        ("played", "ttfa_played"),
        ("overhead", "overhead"),
    )
    w = _width(scores, 24)
    lines = [f"{'where the time goes, p50':<{w}}" + "".join(f"{h:>13}" for h, _ in cols)]
    for v in scores:
        b = v.summary()["breakdown_p50"]
        lines.append(f"{v.name:<{w}}" + "".join(f"{_ms(b[k]):>13}" for _, k in cols))
    lines.append(
        "floor = end of turn (end of user speech -> turn committed) + LLM first text to the TTS (from "
        "the LLM request) + TTS first byte; played = end of user speech -> first sample played (the "
        "simulator's clock); overhead = played - floor, per turn"
    )
    return lines


def guide_table(before: VariantScore, after: VariantScore) -> list[str]:
    b, a = before.summary(), after.summary()
    measured = {
        "average response time": (f"{_num(b['ttfa_mean'], '.2f')} s", f"{_num(a['ttfa_mean'], '.2f')} s"),
        "false interruptions": (
            f"{_num(b['false_interruptions_per_min'], '.2f')}/min",
            f"{_num(a['false_interruptions_per_min'], '.2f')}/min",
        ),
        "log volume": (
            f"{_num(b['log_lines_per_min'], '.0f')} lines/min",
            f"{_num(a['log_lines_per_min'], '.0f')} lines/min",
        ),
    }
    heads = (
        "guide: before",
        "guide: after (expected)",
        f"measured: {before.name}",
        f"measured: {after.name}",
    )
    lines = [f"{'':<22} " + " ".join(f"{h:>24}" for h in heads)]
    for row, (g_before, g_after) in GUIDE.items():
        cells = (g_before, g_after, *measured[row])
        lines.append(f"{row:<22} " + " ".join(f"{c:>24}" for c in cells))
    return lines


def verdicts(scores: list[VariantScore]) -> list[str]:
    """Whether `fast`, `stable` and `production` earn their names on this run (when they ran)."""
    by = {v.name: v.summary() for v in scores}
    out = []
    timed = {n: s["ttfa_p50"] for n, s in by.items() if s["ttfa_p50"] is not None}
    if "fast" in timed and len(timed) > 1:
        lowest = min(timed, key=lambda n: timed[n])
        ok = all(timed["fast"] <= t for t in timed.values())
        verdict = "ok" if ok else "NO"
        out.append(f"fast has the lowest TTFA p50 ({_ms(timed['fast'])} ms; lowest: {lowest}): {verdict}")
    if "stable" in by and len(by) > 1:
        s = by["stable"]
        rates = {
            n: x["false_interruptions_per_min"]
            for n, x in by.items()
            if x["false_interruptions_per_min"] is not None
        }
        fewest = s["false_interruptions_per_min"] is not None and all(
            s["false_interruptions_per_min"] <= r for r in rates.values()
        )
        caught = s["barge_ins_caught_pct"]
        rate = _num(s["false_interruptions_per_min"], ".2f")
        out.append(
            f"stable has the fewest false interruptions ({rate}/min): "
            f"{'ok' if fewest else 'NO'}; barge-ins caught {_num(caught, '.0f')}% "
            f"(>= {BARGE_IN_TARGET:.0f}%): "
            f"{'ok' if caught is None or caught >= BARGE_IN_TARGET else 'NO'}; premature cut-offs "
            f"{s['premature_cutoffs']}: {'ok' if s['premature_cutoffs'] == 0 else 'NO'}"
        )
    if "production" in by and "before" in by and by["before"]["ttfa_p50"] and by["production"]["ttfa_p50"]:
        ratio = by["production"]["ttfa_p50"] / by["before"]["ttfa_p50"]
        out.append(
            f"production's TTFA p50 is {ratio:.2f}x the guide's before (<= {PRODUCTION_VS_BEFORE}): "
            f"{'ok' if ratio <= PRODUCTION_VS_BEFORE else 'NO'}"
        )
    return out


SMART_TURN_INFERENCE_P95 = 0.1
"""s: the end-of-turn model's inference p95 target (issue 13)."""


def turn_detection_table(scores: list[VariantScore]) -> list[str]:
    """With and without an end-of-turn model: cut-offs in the turns said with a mid-sentence
    pause, TTFA of complete utterances and of the paused turns, the model's inference time."""
    w = _width(scores, 24)
    lines = [
        f"{'variant':<{w}} {'detection':<10} {'pause cut-offs':>14} {'complete p50':>12} {'p95':>5} "
        f"{'paused p50':>10} {'p95':>5} {'inference p50':>13} {'p95':>5} {'n':>4}",
    ]
    for v in scores:
        d = v.turn_detection()
        cut = f"{d['paused_cutoffs']}/{d['paused_turns']}"
        lines.append(
            f"{v.name:<{w}} {d['detection']:<10} {cut:>14} {_ms(d['complete_ttfa_p50']):>12} "
            f"{_ms(d['complete_ttfa_p95']):>5} {_ms(d['paused_ttfa_p50']):>10} "
            f"{_ms(d['paused_ttfa_p95']):>5} "
            f"{_ms(d['eot_inference_p50']):>13} {_ms(d['eot_inference_p95']):>5} {d['eot_predictions']:>4}"
        )
    lines.append(
        "ms; pause cut-offs = replies begun in a mid-sentence pause / turns said with one; complete = "
        "ttfa of every other turn; paused = ttfa of the paused turns (from the end of their last word); "
        "inference = one prediction of the model (features + ONNX) as the provider timed it, n predictions"
    )
    return lines


def turn_detection_verdicts(scores: list[VariantScore]) -> list[str]:
    """Issue 13's targets for each `X+smart-turn[...]`, shown next to its `X`: no pause cut-off at
    all (fewer than X's is not enough: each one is a caller cut off), complete-utterance TTFA no
    worse than `production` without the model, inference p95 under 100 ms."""
    from handler.bench.variants import SMART_TURN

    by = {v.name: v.turn_detection() for v in scores}
    reference = by.get("production")
    out = []
    for name, d in by.items():
        if SMART_TURN not in name:  # X+smart-turn, or a tuned X+smart-turn-...
            continue
        base = by.get(name.split(SMART_TURN)[0])
        parts = []
        if base is not None:
            parts.append(
                f"pause cut-offs {d['paused_cutoffs']} (without: {base['paused_cutoffs']}): "
                f"{'ok' if d['paused_cutoffs'] == 0 else 'NO'}"
            )
        if reference is not None and reference["complete_ttfa_p50"] and d["complete_ttfa_p50"]:
            ok = (
                d["complete_ttfa_p50"] <= reference["complete_ttfa_p50"]
                and d["complete_ttfa_p95"] <= reference["complete_ttfa_p95"]
            )
            parts.append(
                f"complete ttfa p50/p95 {_ms(d['complete_ttfa_p50'])}/{_ms(d['complete_ttfa_p95'])} ms "
                f"(production: {_ms(reference['complete_ttfa_p50'])}/{_ms(reference['complete_ttfa_p95'])}): "
                f"{'ok' if ok else 'NO'}"
            )
        if d["eot_inference_p95"] is not None:
            ok = d["eot_inference_p95"] < SMART_TURN_INFERENCE_P95
            parts.append(
                f"inference p95 {_ms(d['eot_inference_p95'])} ms "
                f"(< {SMART_TURN_INFERENCE_P95 * 1000:.0f}): {'ok' if ok else 'NO'}"
            )
        out.append(f"{name}: " + "; ".join(parts))
    return out


def render(scores: list[VariantScore], header: str) -> str:
    lines = [header, "", *table(scores)]
    lines.append(
        "ms; ttfa = end of user speech -> first agent audio (livekit's e2e latency), over every answered "
        "turn; false/min = replies paused or stopped by a sound that was no barge-in, per minute of agent "
        "speech; "
        "cut-offs = replies begun while the user was mid-sentence; log lines per minute of conversation; "
        "as declared = conversations whose [expect] held"
    )
    lines += ["", *breakdown(scores)]
    by = {v.name: v for v in scores}
    if "before" in by and "production" in by:
        lines += [
            "",
            "the guide's Benchmark Results, measured (before -> production):",
            *guide_table(by["before"], by["production"]),
        ]
    if checks := verdicts(scores):
        lines += ["", *checks]
    if any(v.eot_inference or v.detection not in ("vad", "-") for v in scores):
        lines += ["", "turn detection, with and without the end-of-turn model:"]
        lines += turn_detection_table(scores)
        lines += turn_detection_verdicts(scores)
    for v in scores:
        for f in v.failed:
            lines.append(f"{v.name}: failed: {f}")
        for c in v.conversations:
            if c.unmet:
                lines.append(f"{v.name}: {c.scenario}: expected {'; '.join(c.unmet)}")
    return "\n".join(lines)
