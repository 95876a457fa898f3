"""What each provider fault costs a caller, and the bound that holds.

    python measurements/faults.py [--timeout 2] [--max-retries 2] [--stage stt --stage llm ...] [--only calls]

One request per stage (a recognized utterance, a chat reply, a streamed synthesis), built as a
session builds it (`support.stage_faults`: the real livekit plugins behind the resilience
layer), against the local provider servers with cloud-like latencies (`handler.sim.cloudsim.PROFILES`),
once without a fault and once per fault, the provider alone and with a local fallback. "extra" is
how much later the first useful output came than without the fault (STT: final transcript after
the end of speech; LLM: first token; TTS: first audio), or, when nothing came, how long until the
failure was reported. The bound: an answered request pays at most MAX_RETRIES failed attempts,
each cut at HTTP_TIMEOUT, plus livekit's waits between attempts (0.1 s, then
`retry.backoff_initial`); a failed one at most one attempt more; a fallback adds its own time.

The burst rows (`--only calls`): whole simulated `qa` calls over the same servers, one per row, with
a burst of N consecutive requests of one stage meeting a fault, at the call's start or mid-call
(once the first reply was synthesized; the provider also drops its connections), and a provider
down for the whole call: what the caller hears. docs/faults.md has the table and the rule.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # test-only helpers (support)

from support.stage_faults import FAULTS, BurstCall, Outcome, burst_call, stage_request  # noqa: E402

from handler.fakes import ElevenLabsServer, OpenAIServer, SonioxServer  # noqa: E402
from handler.pipeline import http  # noqa: E402
from handler.resilience import breaker  # noqa: E402
from handler.resilience.decider import EVIDENCE, late_reply_bound  # noqa: E402
from handler.sim import cloudsim  # noqa: E402

SERVERS: dict[str, Any] = {"stt": SonioxServer, "llm": OpenAIServer, "tts": ElevenLabsServer}
FALLBACK_SLACK = 1.5
"""Seconds the local fallback may take beyond the bound (espeak / pocketsphinx / the scripted LLM)."""


def bounds(timeout: float, retries: int, backoff: float) -> tuple[float, float]:
    """(worst extra of an answered request, worst extra of a failed one)."""
    waits = 0.1 + max(retries - 1, 0) * backoff if retries else 0.0
    return retries * timeout + waits, (retries + 1) * timeout + waits


async def one(stage: str, fault: str, chained: bool, overrides: dict[str, Any]) -> Outcome:
    breaker.reset_all()  # provider health is per process: each cell starts healthy
    settings, registry = cloudsim.load_checked("production")
    faults = FAULTS[fault]() if fault != "none" else []
    async with SERVERS[stage](faults=faults, profile=cloudsim.PROFILES[stage]) as srv:
        url = srv.base_url
        if fault == "down":
            await srv.stop()
        pace = 1.0 if stage == "stt" else 0.0
        return await stage_request(
            stage, srv, settings, registry, chained=chained, pace=pace, base_url=url, overrides=overrides
        )


def cost(outcome: Outcome, baseline: Outcome) -> float:
    if outcome.answered and outcome.first_output is not None and baseline.first_output is not None:
        return outcome.first_output - baseline.first_output
    return outcome.elapsed - (baseline.first_output or 0.0)


CALLS: list[tuple[str, int, bool]] = [
    ("503", 4, False),
    ("429", 6, False),
    ("slow", 4, False),
    ("500", 6, True),
    ("slow", 3, True),
    ("down", 0, False),
]
"""The burst rows: (fault, consecutive requests that meet it, mid-call), per stage; "down" is the
provider refusing every request for the whole call."""


def heard(call: BurstCall, base: BurstCall, apology: str) -> str:
    """What the caller hears, in a few words."""
    turns = [t for t in call.report.turns if t.kind == "turn"]
    scripted = len([t for t in base.report.turns if t.kind == "turn"])
    late = [
        (t.n, t.ttfa_played - b.ttfa_played)
        for t, b in zip(turns, base.report.turns, strict=False)
        if t.reply_text and t.ttfa_played is not None and b.ttfa_played is not None
    ]
    n, extra = max(late, key=lambda x: x[1], default=(0, 0.0))
    said = f"{call.answered} of {scripted} answered"
    if extra >= 0.5:
        said += f", turn {n} {extra:+.1f} s"
    if any(t.kind == "turn" and not t.reply_text and t.record is not None for t in turns):
        said += ", a turn unanswered"
    if call.report.ended:
        said += f"; {'apology, ' if any(apology in s for s in call.spoken) else ''}call ended"
    return said


async def run_calls(args: argparse.Namespace, overrides: dict[str, Any]) -> bool:
    """The burst rows: one simulated `qa` call per row (a minute or so per stage)."""
    from handler.sim import scenario

    settings, registry = cloudsim.load_checked("production", overrides, "measurements/faults.py")
    sc = scenario.load(scenario.resolve("qa"))
    r = settings.section("resilience")
    print(f"\nbursts in a call (scenario qa, {len(sc.turns)} turns, HTTP_TIMEOUT {args.timeout:g} s)")
    print(
        f"rule: a stage is down for good after {r['down_for']:g} s without a success (resilience.down_for) "
        f"and {EVIDENCE} requests failed after every attempt; until then it is ridden out (the STT replays "
        f"the utterance it holds, a failed reply is asked for again after {r['probe_initial']:g}-"
        f"{r['probe_max']:g} s); a late reply comes within {late_reply_bound(settings):.0f} s\n"
    )
    header = f"{'stage':5} {'burst':16} {'when':6} {'call':>7} {'att':>4}  what the caller hears"
    print(header)
    print("-" * 90)
    ok = True
    for stage in args.stage:
        breaker.reset_all()
        base = await burst_call(
            stage, "none", 0, mid_call=False, settings=settings, registry=registry, scenario=sc
        )
        for fault, count, mid in CALLS:
            breaker.reset_all()
            call = await burst_call(
                stage, fault, count, mid_call=mid, settings=settings, registry=registry, scenario=sc
            )
            burst = "down, whole call" if fault == "down" else f"{count} x {fault}"
            print(
                f"{stage:5} {burst:16} {'mid' if mid else 'start':6} {call.elapsed:6.1f}s {call.attempts:4}  "
                f"{heard(call, base, settings.get('resilience.apology'))}"
            )
            if fault == "down":
                ok = ok and call.report.ended is not None
            else:
                ok = ok and call.report.ended is None and call.answered == len(sc.turns)
    return ok


async def run(args: argparse.Namespace) -> int:
    overrides = {
        "http.timeout": args.timeout,
        "retry.max_retries": args.max_retries,
        "retry.jitter": 0.0,
    }
    settings, _ = cloudsim.load_checked("production")
    backoff = settings.get("retry.backoff_initial")
    answered_bound, failed_bound = bounds(args.timeout, args.max_retries, backoff)
    print(
        f"HTTP_TIMEOUT {args.timeout:g} s, MAX_RETRIES {args.max_retries}, backoff {backoff:g} s; "
        f"{cloudsim.describe()}"
    )
    print(
        f"bound: answered within +{answered_bound:.1f} s, failed within +{failed_bound:.1f} s "
        f"(a fallback adds its own time)\n"
    )
    header = f"{'stage':5} {'fault':15} {'alone':>26} {'with fallback':>26}"
    if args.requests:
        print(header)
        print("-" * len(header))
    ok = True
    try:
        for stage in args.stage if args.requests else []:
            base = {chained: await one(stage, "none", chained, overrides) for chained in (False, True)}
            for fault in ["none", *FAULTS]:
                cells = []
                for chained in (False, True):
                    outcome = (
                        base[chained] if fault == "none" else await one(stage, fault, chained, overrides)
                    )
                    extra = cost(outcome, base[chained])
                    limit = (answered_bound if outcome.answered else failed_bound) + (
                        failed_bound + FALLBACK_SLACK if chained else 0.0
                    )
                    within = extra <= limit and outcome.attempts <= args.max_retries + 1
                    ok = ok and within and (bool(outcome.answered) or outcome.faults.errors > 0)
                    said = "answered" if outcome.answered else "reported"
                    cells.append(f"{said} {extra:+5.1f} s, {outcome.attempts} att{'' if within else ' !'}")
                print(f"{stage:5} {fault:15} {cells[0]:>26} {cells[1]:>26}")
        if args.calls:
            ok = await run_calls(args, overrides) and ok
    finally:
        await http.close_shared_session()
    print(
        "\nextra = seconds later than without the fault (first transcript / token / audio), or until "
        "the failure was reported; att = attempts the provider saw (in a burst row: its requests in the "
        "whole call); ! = outside the bound; turn N +S s = the latest turn, S s later than without the burst"
    )
    print(f"every cell within its bound and answered or reported: {'ok' if ok else 'NO'}")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timeout", type=float, default=2.0, help="HTTP_TIMEOUT, s (default 2)")
    parser.add_argument("--max-retries", type=int, default=2, help="MAX_RETRIES (default 2)")
    parser.add_argument(
        "--stage", action="append", choices=["stt", "llm", "tts"], help="repeatable; default all"
    )
    parser.add_argument(
        "--only",
        choices=["requests", "calls"],
        help="only the per-request rows, or only the burst rows (whole calls); default both",
    )
    args = parser.parse_args()
    args.requests, args.calls = args.only in (None, "requests"), args.only in (None, "calls")
    args.stage = args.stage or ["stt", "llm", "tts"]
    import logging

    logging.disable(logging.CRITICAL)  # the table is the output
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
