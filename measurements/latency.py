"""Where the time to first audio goes, per environment, on the same conversation.

    python measurements/latency.py [SCENARIO] [--envs dev,fast,stable,production]

Runs `python -m handler simulate SCENARIO --env E --offline --json` for each environment (the
offline STT, LLM and TTS with that environment's turn handling), then prints time to first audio
and its parts: the end-of-turn wait, the LLM's first sentence, the TTS's first byte, their sum
(the floor the configuration and providers impose) and the handler's overhead above it.
"""

from __future__ import annotations

import argparse

from offline_run import simulate_offline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="qa")
    ap.add_argument("--envs", default="dev,fast,stable,production")
    args = ap.parse_args()
    ms = lambda v: "-" if v is None else f"{v * 1000:.0f}"  # noqa: E731
    print(f"scenario {args.scenario}, offline stack (local STT/LLM/TTS), milliseconds, p50 over turns")
    print(
        f"{'env':<11} {'endpoint':>8} {'ttfa p50':>8} {'ttfa p95':>8} {'eot':>6} {'llm 1st':>7} "
        f"{'tts 1st':>7} {'floor':>6} {'overhead':>8} {'WER':>5} {'false/min':>9}"
    )
    for env in args.envs.split(","):
        doc, _ = simulate_offline(args.scenario, env)
        s, b = doc["summary"], doc["summary"]["breakdown_p50"]
        print(
            f"{env:<11} {ms(doc['settings']['min_endpointing_delay']):>8} {ms(s['ttfa_p50']):>8} "
            f"{ms(s['ttfa_p95']):>8} {ms(b['end_of_turn_delay']):>6} {ms(b['llm_ttfs']):>7} "
            f"{ms(b['tts_ttfb']):>7} {ms(b['floor']):>6} {ms(b['overhead']):>8} {s['wer']:>5} "
            f"{s['false_interruptions_per_min']:>9}"
        )
    print(
        "eot = end of user speech -> turn committed (VAD silence + endpointing delay + STT final);"
        " llm 1st = LLM start -> first sentence; floor = eot + llm 1st + tts 1st;"
        " overhead = played ttfa (the simulator's measure) - floor; ttfa = livekit's e2e latency"
    )


if __name__ == "__main__":
    main()
