"""`python -m handler bench`: its plumbing on a slice of the corpus (real sessions, real plugins,
the provider servers in load mode), and the user's mistakes it refuses before running anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handler.bench.variants import BUILT_IN, LIVEKIT_DEFAULTS, VariantError, parse
from handler.sim import scenario


def test_the_corpus_has_twenty_conversations_in_four_voices_each_declaring_what_must_happen() -> None:
    corpus = [scenario.load(scenario.resolve(f"corpus/{n}")) for n in scenario.corpus_names()]
    assert len(corpus) >= 20
    assert len({(sc.user_voice, sc.user_rate) for sc in corpus}) >= 4
    kinds = {e.kind for sc in corpus for t in sc.turns for e in t.during_reply}
    assert kinds == {"cough", "noise", "babble", "backchannel", "barge_in"}
    assert any(len(t.parts) > 1 for sc in corpus for t in sc.turns)  # mid-sentence pauses
    for sc in corpus:
        barge_ins = sum(e.kind == "barge_in" for t in sc.turns for e in t.during_reply)
        assert sc.expect == {
            "answered": len(sc.turns) + barge_ins,
            "interruptions": barge_ins,
            "premature_cutoffs": 0,
        }, sc.name


def test_a_variant_is_an_environment_plus_typed_overrides() -> None:
    v = parse('smart=fast:turn.detection="stt",llm.max_tokens=200,vad.min_silence_duration=0.2')
    assert (v.name, v.env) == ("smart", "fast")
    assert v.overrides == {"turn.detection": "stt", "llm.max_tokens": 200, "vad.min_silence_duration": 0.2}
    # on a built-in variant: its overrides and connection model, then these
    quick = parse("quick=before:logging.level=WARNING")
    assert quick.env == "dev" and quick.connection_per_request
    assert quick.overrides == {**BUILT_IN["before"].overrides, "logging.level": "WARNING"}
    assert BUILT_IN["livekit"].overrides == LIVEKIT_DEFAULTS
    for bad in ("nosuch", "=fast", "x=fast:novalue"):
        with pytest.raises(VariantError):
            parse(bad)


@pytest.mark.parametrize(
    "args,says",
    [
        (["--envs", "nosuch"], "unknown variant 'nosuch'; built-in: before, livekit, dev, fast"),
        (["--variant", "x=fast:turn.min_endpointing_delay=-1"], "turn.min_endpointing_delay = -1"),
        (["--variant", "x=nosuchenv"], "nosuchenv"),
        (["--envs", "fast,fast"], "variants named twice: fast"),
        (["--scenario", "nosuch"], "corpus/NAME with NAME one of"),
        (["--concurrency", "0"], "--concurrency 0: must be 1 to 32"),
    ],
)
def test_bad_input_is_refused_with_one_message_before_anything_runs(cli, args: list[str], says: str) -> None:
    out = cli("bench", *args, timeout=60)
    assert out.returncode == 2, out.stderr
    assert says in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_a_wav_scenario_and_an_unwritable_plot_directory_are_refused(cli, tmp_path: Path) -> None:
    sc = tmp_path / "wav.toml"
    sc.write_text('[[turns]]\nwav = "q.wav"\n')
    out = cli("bench", "--scenario", str(sc), timeout=60)
    assert out.returncode == 2 and "bench needs the text of every utterance" in out.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = cli("bench", "--scenario", "clean_weather_us", "--plot", str(blocker / "plots"), timeout=60)
    assert out.returncode == 2 and f"--plot {blocker / 'plots'}: cannot write" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.realtime
def test_bench_runs_variants_over_a_corpus_slice_and_prints_the_table_and_writes_the_plots(
    cli, tmp_path: Path
) -> None:
    out = cli(
        "bench", "--envs", "before,production", "--scenario", "clean_weather_us", "--json",
        "--plot", str(tmp_path), timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    before, production = (v["summary"] for v in doc["variants"])
    for s in (before, production):
        assert s["conversations"] == 1 and s["failed"] == 0
        assert s["turns_timed"] == 2 and 0.5 < s["ttfa_p50"] < 5.0
        assert s["premature_cutoffs"] == 0 and s["as_declared"] == 1
        # where the time goes: every part measured, the floor their sum's order of magnitude
        assert all(v is not None for v in s["breakdown_p50"].values()), s["breakdown_p50"]
        assert 0.5 < s["breakdown_p50"]["floor"] < 5.0
    # DEBUG logs against production's WARNING: many more lines per minute
    assert before["log_lines_per_min"] > 5 * max(production["log_lines_per_min"], 1)
    # a new connection per request: each turn pays it at least once more than the pooled run
    assert before["ttfa_p50"] > production["ttfa_p50"] + 0.2
    # progress on stderr, one line per conversation
    assert "before        1/1 clean_weather_us: ttfa" in out.stderr
    for name in ("ttfa.png", "tradeoff.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_table_the_guides_table_and_the_verdicts_come_from_the_scores() -> None:
    from handler.bench.render import render
    from handler.bench.score import ConversationScore, VariantScore

    def variant(name: str, ttfa: float, false: int, caught: int, cutoffs: int, lines: int) -> VariantScore:
        c = ConversationScore(
            name, [ttfa, ttfa + 0.1], false, 2, caught, cutoffs, agent_speech_s=60.0, duration_s=120.0
        )
        return VariantScore(name, name, "", {}, [c], log_lines=lines)

    scores = [
        variant("before", 2.0, 3, 2, 1, 1000),
        variant("fast", 1.2, 2, 2, 1, 20),
        variant("stable", 1.9, 0, 2, 0, 20),
        variant("production", 1.3, 1, 1, 0, 20),
    ]
    text = render(scores, "header")
    row = next(line for line in text.splitlines() if line.startswith("stable "))
    assert row.split() == ["stable", "1900", "2000", "0.00", "2/2", "100%", "0", "10.0", "1/1"]
    assert "average response time" in text and "2.05 s" in text and "500 lines/min" in text
    assert "fast has the lowest TTFA p50 (1200 ms; lowest: fast): ok" in text
    assert "stable has the fewest false interruptions (0.00/min): ok; barge-ins caught 100%" in text
    assert "production's TTFA p50 is 0.65x the guide's before (<= 0.5): NO" in text


def test_with_smart_turn_pairs_a_variant_with_itself_under_the_end_of_turn_model() -> None:
    from handler.bench.variants import paired_with_smart_turn, with_smart_turn

    before = with_smart_turn(BUILT_IN["before"])
    assert before.name == "before+smart-turn" and before.env == "dev" and before.connection_per_request
    assert before.overrides == {**BUILT_IN["before"].overrides, "turn.detection": "smart-turn"}
    assert with_smart_turn(BUILT_IN["fast"]).overrides == {"turn.detection": "smart-turn"}
    tuned = parse('st=production:turn.detection="smart-turn",turn.smart-turn.threshold=0.1')
    paired = paired_with_smart_turn([BUILT_IN["fast"], tuned])
    assert [v.name for v in paired] == ["fast", "fast+smart-turn", "st"]  # the tuned one has the model


def _report(sc: scenario.Scenario, detection: str, turns: list[tuple[float | None, int]]) -> dict:
    """A conversation's report as simulate gives it, with (ttfa, premature cut-offs) per turn."""
    return {
        "scenario": sc.name,
        "providers": {"turn": detection},
        "errors": [],
        "summary": {
            "premature_cutoffs": sum(c for _, c in turns),
            "agent_speech_s": 30.0,
            "duration_s": 60.0,
            "answered": len(turns),
            "interruptions": 0,
        },
        "turns": [
            {"kind": "turn", "ttfa": t, "false_interruptions": 0, "interrupted": False}
            | {"premature_cutoffs": c}
            for t, c in turns
        ],
    }


def test_the_turn_detection_table_splits_paused_turns_from_complete_ones_and_checks_the_targets() -> None:
    from handler.bench.render import render, turn_detection_verdicts
    from handler.bench.score import VariantScore, score

    paused = scenario.load(scenario.resolve("corpus/pause_order_number"))  # paused turn, then "thank you"
    clean = scenario.load(scenario.resolve("corpus/clean_weather_us"))
    assert len(paused.turns[0].parts) == 2 and len(paused.turns[1].parts) <= 1

    def variant(name: str, detection: str, paused_turns: list[tuple[float, int]], inference: list[float]):
        convs = [score(paused, _report(paused, detection, [turn, (1.0, 0)])) for turn in paused_turns]
        convs.append(score(clean, _report(clean, detection, [(1.2, 0), (1.1, 0)])))
        return VariantScore(name, name, "", {}, convs, log_lines=10, eot_inference=inference)

    scores = [
        variant("fast", "vad", [(0.9, 1)], []),
        variant("fast+smart-turn", "smart-turn", [(3.0, 0)], [0.05, 0.06, 0.2]),
        variant("production", "vad", [(1.0, 1)], []),
        variant("stable", "vad", [(1.0, 1), (1.0, 1)], []),
        variant("stable+smart-turn", "smart-turn", [(0.8, 1), (3.0, 0)], [0.05]),
    ]
    d = scores[1].turn_detection()
    assert (d["paused_turns"], d["paused_cutoffs"], d["complete_turns_timed"]) == (1, 0, 3)
    assert d["paused_ttfa_p50"] == 3.0 and 1.0 <= d["complete_ttfa_p50"] <= 1.2
    assert d["eot_predictions"] == 3 and d["eot_inference_p95"] > 0.1
    # the paused turn's 3 s hold is not counted among the complete utterances
    assert scores[1].summary()["ttfa_p95"] > 2.0 > d["complete_ttfa_p95"]
    text = render(scores, "header")
    table = text.split("turn detection, with and without the end-of-turn model:")[1]
    row = next(line for line in table.splitlines() if line.startswith("fast+smart-turn "))
    assert row.split()[:5] == ["fast+smart-turn", "smart-turn", "0/1", "1100", "1200"]
    verdict, kept = turn_detection_verdicts(scores)
    assert verdict.startswith("fast+smart-turn: pause cut-offs 0 (without: 1): ok; complete ttfa")
    assert "(production: 1100/1200): ok" in verdict and verdict.endswith("(< 100): NO")
    # the target is no cut-off at all: one is a caller cut off, even where X had more
    assert kept.startswith("stable+smart-turn: pause cut-offs 1 (without: 2): NO;")
    # no model in the run: no such table
    assert "turn detection, with and without" not in render([scores[0], scores[2]], "header")


def test_where_the_time_goes_is_the_p50_of_each_part_over_the_variants_turns() -> None:
    from handler.bench.render import render
    from handler.bench.score import ConversationScore, VariantScore

    parts = {"end_of_turn_delay": [0.5, 0.7, 0.6], "floor": [1.2, 1.4, 1.3], "overhead": [0.02, 0.05, 0.03]}
    c = ConversationScore("c", [1.3], agent_speech_s=60.0, duration_s=120.0, parts=parts)
    v = VariantScore("fast", "fast", "", {}, [c], log_lines=10)
    b = v.summary()["breakdown_p50"]
    assert (b["end_of_turn_delay"], b["floor"], b["overhead"], b["tts_ttfb"]) == (0.6, 1.3, 0.03, None)
    # the second row of `fast`: under "where the time goes", the parts' columns in order
    row = [line for line in render([v], "header").splitlines() if line.startswith("fast ")][1]
    assert row.split() == ["fast", "600", "-", "-", "-", "1300", "-", "30"]
