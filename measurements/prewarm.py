"""Pre-warm benchmark: time to first audio on a session's first turn against its later turns.

    python measurements/prewarm.py [--env production] [--turns 4] [--sessions 1]

The cloud stack (soniox, openai, elevenlabs plugins, unmodified) runs whole conversations through
`simulate` against the local provider servers (`handler.sim.cloudsim`), where every new connection
costs 300 ms, the cost DNS + TCP + TLS to a cloud region adds. The user says the same sentence
every turn, so the first turn differs from the others only in what is warm. Three modes:

  pre-warm on      `http.prewarm = true` (the default), exactly as the worker does it: the
                   providers' hosts are opened while the session is set up, then each component
                   warms its own channel (OpenAI: GET /models on the SDK's pool; ElevenLabs: its
                   websocket); Soniox's stream opens when the session starts.
  pre-warm off     `http.prewarm = false`: each connection opens when first needed, on turn one.
  guide "before"   the performance guide's starting point, a new HTTP session per request: every
                   LLM request and every TTS stream pays the connection cost on every turn
                   (emulated: the 300 ms are added to each request's first byte, pre-warm off).

First turn = turn one (the median over sessions); steady state = the median of the later turns.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

from handler.sim import cloudsim, scenario, simulate

SENTENCE = "thank you very much"
TARGET = 1.05


MODES = {
    "pre-warm on": (True, cloudsim.PROFILES),
    "pre-warm off": (False, cloudsim.PROFILES),
    'guide "before"': (False, cloudsim.connection_per_request()),
}


async def session_ttfas(env: str, sc: scenario.Scenario, prewarm: bool, profiles: dict) -> list[float]:
    settings, registry = cloudsim.load_checked(env)
    settings = settings.with_overrides({"http.prewarm": prewarm}, "benchmark")
    async with cloudsim.running(settings, registry, sc.recognizer_phrases(), profiles) as (cloud, _):
        report, _ = await simulate(cloud, registry, sc)
    missing = [t.n for t in report.turns if t.ttfa is None]
    if missing or report.errors:
        sys.exit(f"benchmark run failed: no first audio on turns {missing}; errors {report.errors}")
    return [t.ttfa for t in report.turns if t.ttfa is not None]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="production", help="environment whose settings apply")
    parser.add_argument("--turns", type=int, default=4, help="turns per session (at least 2)")
    parser.add_argument("--sessions", type=int, default=1, help="sessions per mode")
    args = parser.parse_args()
    turns = max(2, args.turns)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "same-turns.toml")
        turn = f'[[turns]]\nsay = "{SENTENCE}"\npause = 1.0\n'
        path.write_text('name = "same-turns"\n' + turn * turns)
        sc = scenario.load(path)

        rows = []
        for mode, (prewarm, profiles) in MODES.items():
            firsts, steady = [], []
            for _ in range(args.sessions):
                ttfas = await session_ttfas(args.env, sc, prewarm, profiles)
                firsts.append(ttfas[0])
                steady += ttfas[1:]
            first, rest = statistics.median(firsts), statistics.median(steady)
            rows.append((mode, first, rest, first / rest))

    connect = cloudsim.PROFILES["llm"].connect_delay * 1000
    print("time to first audio (end of user speech -> first agent audio), cloud stack over local fakes")
    print(f"env {args.env}, {args.sessions} session(s) x {turns} identical turns ({SENTENCE!r})")
    print(cloudsim.describe())
    print()
    print(f"{'mode':<18} {'first turn':>11} {'steady state':>13} {'first/steady':>13}")
    for mode, first, rest, ratio in rows:
        print(f"{mode:<18} {first * 1000:>8.0f} ms {rest * 1000:>10.0f} ms {ratio:>13.2f}")
    print()
    ratio = rows[0][3]
    verdict = "ok" if ratio <= TARGET else "ABOVE TARGET"
    print(f"pre-warm on: first/steady {ratio:.2f} (target <= {TARGET}): {verdict}")
    print(
        f'guide "before" = a new HTTP session per request: every turn pays {connect:.0f} ms per LLM '
        "request and TTS stream (emulated by adding it to each request's first byte)"
    )


if __name__ == "__main__":
    asyncio.run(main())
