"""What each provider fault costs a caller, and the bound that holds.

    python benchmarks/faults.py [--timeout 2] [--max-retries 2] [--stage stt --stage llm ...]

One request per stage (a recognized utterance, a chat reply, a streamed synthesis), built as a
session builds it (`support.stage_faults`: the real livekit plugins behind the resilience
layer), against the local provider servers with cloud-like latencies (`handler.sim.cloudsim.PROFILES`),
once without a fault and once per fault, the provider alone and with a local fallback. "extra" is
how much later the first useful output came than without the fault (STT: final transcript after
the end of speech; LLM: first token; TTS: first audio), or, when nothing came, how long until the
failure was reported. The bound: an answered request pays at most MAX_RETRIES failed attempts,
each cut at HTTP_TIMEOUT, plus livekit's waits between attempts (0.1 s, then
`retry.backoff_initial`); a failed one at most one attempt more; a fallback adds its own time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # test-only helpers (support)

from support.stage_faults import FAULTS, Outcome, stage_request  # noqa: E402

from handler.fakes import ElevenLabsServer, OpenAIServer, SonioxServer  # noqa: E402
from handler.pipeline import http  # noqa: E402
from handler.resilience import breaker  # noqa: E402
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
    print(header)
    print("-" * len(header))
    ok = True
    try:
        for stage in args.stage:
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
    finally:
        await http.close_shared_session()
    print(
        "\nextra = seconds later than without the fault (first transcript / token / audio), or until "
        "the failure was reported; att = attempts the provider saw; ! = outside the bound"
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
    args = parser.parse_args()
    args.stage = args.stage or ["stt", "llm", "tts"]
    import logging

    logging.basicConfig(level=logging.CRITICAL)  # the table is the output
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
