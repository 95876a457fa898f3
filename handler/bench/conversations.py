"""One variant over conversations, in a process of its own (the logging policy, the HTTP pool and
provider health are the process's):

    python -m handler.bench.conversations < job.json

The job: {"variant": {...Variant's fields}, "scenarios": [paths], "concurrency": N}. Every
conversation is a real `AgentSession` (`handler.sim.simulate`) on the cloud stack (the unmodified
soniox, openai and elevenlabs plugins) against the provider servers in load mode, on their own
event loop in a thread, with the cloud latency profile: the recognizer knows each utterance's
transcript from its samples (`handler.sim.transcripts`), the LLM answers from the `local` reply
table, the TTS sends a tone as long as the text. Up to N conversations run at once. One JSON line
per conversation on stdout as it finishes, then {"log_lines": n, "eot_inference": [s, ...]} (the
end-of-turn model's prediction times, when one ran); the log lines themselves go to a
file, counted at the end.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from handler.bench.variants import Variant

RAMP = 1.0
"""Seconds between the starts of the first conversations: callers do not all start in the same
instant, and the sessions' set-up (the VAD's model, the provider connections) is spread out."""


def _emit(doc: dict[str, Any]) -> None:
    print(json.dumps(doc), flush=True)


async def run(variant: Variant, paths: list[str], concurrency: int) -> None:
    from handler.fakes.background import InBackground
    from handler.pipeline.http import close_shared_session
    from handler.pipeline.session import redirect_log_lines
    from handler.room.loadtest import load_mode_servers
    from handler.sim import cloudsim, scenario, simulate
    from handler.sim.clips import make_sounds
    from handler.sim.transcripts import known_transcripts

    plan = cloudsim.load(variant.env, variant.overrides, f"bench variant {variant.name}")
    settings, registry = plan.settings, plan.registry
    plan.configure_logging()
    with tempfile.TemporaryFile("w+", encoding="utf-8") as log:
        redirect_log_lines(log)
        scenarios = [scenario.load(Path(p)) for p in paths]
        sounds = {sc.path: await make_sounds(sc, registry, settings) for sc in scenarios}
        # one text in several voices: each voice's audio (a dict by text would keep only the last)
        spoken = [(text, pcm) for s in sounds.values() for text, pcm in s.spoken.items()]
        profiles = cloudsim.connection_per_request() if variant.connection_per_request else cloudsim.PROFILES
        servers = InBackground(
            lambda: load_mode_servers(
                known_transcripts(spoken), cloudsim.responder(settings, registry), profiles
            )
        )
        gate = asyncio.Semaphore(concurrency)
        with servers as urls:
            cloud = settings.with_overrides(urls, cloudsim.SOURCE)

            async def one(i: int, sc: scenario.Scenario) -> None:
                async with gate:
                    if i < concurrency:  # the first wave spread out, as callers do not all start at once
                        await asyncio.sleep(i * RAMP)
                    try:
                        report, _ = await simulate(
                            cloud, registry, sc, sounds=sounds[sc.path], close_pool=False, source="bench"
                        )
                    except Exception as e:  # one broken conversation does not stop the others
                        _emit({"scenario": str(sc.path), "failed": f"{type(e).__name__}: {e}"})
                        return
                    _emit({"scenario": str(sc.path), "report": report.to_dict()})

            try:
                await asyncio.gather(*(one(i, sc) for i, sc in enumerate(scenarios)))
            finally:
                await close_shared_session()
        log.flush()
        log.seek(0)
        _emit({"log_lines": sum(1 for _ in log), "eot_inference": _eot_inference()})


def _eot_inference() -> list[float]:
    """The end-of-turn model's own prediction times in this process (s), when one ran (the turn
    detector reports them: `handler.observe.timings`)."""
    from handler.observe import timings

    return timings.times(timings.EOT_INFERENCE)


def main() -> None:
    job = json.loads(sys.stdin.read())
    variant = Variant(**job["variant"])
    asyncio.run(run(variant, job["scenarios"], job["concurrency"]))
    from handler.records import writer

    writer.finish(lambda line: print(line, file=sys.stderr))


if __name__ == "__main__":
    main()
