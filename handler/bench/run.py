"""`bench`'s driver: one child process per variant (`handler.bench.conversations`), one after the
other, each running the conversations `concurrency` at a time; progress as each one finishes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from handler.bench.score import VariantScore, score
from handler.bench.variants import Variant
from handler.sim.scenario import Scenario


def run_variant(
    variant: Variant, scenarios: list[Scenario], concurrency: int, progress: Callable[[str], None]
) -> VariantScore:
    result = VariantScore(variant.name, variant.env, variant.about, dict(variant.overrides), [])
    by_path = {str(sc.path): sc for sc in scenarios}
    job = {
        "variant": dataclasses.asdict(variant),
        "scenarios": list(by_path),
        "concurrency": concurrency,
    }
    with tempfile.TemporaryFile("w+", encoding="utf-8") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "handler.bench.conversations"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(json.dumps(job))
        child.stdin.close()
        done = 0
        for line in child.stdout:
            doc = json.loads(line)
            if "log_lines" in doc:
                result.log_lines = doc["log_lines"]
                result.eot_inference = doc.get("eot_inference", [])
                continue
            done += 1
            sc = by_path[doc["scenario"]]
            if "failed" in doc:
                result.failed.append(f"{sc.name}: {doc['failed']}")
                progress(f"{variant.name:<12} {done:>2}/{len(scenarios)} {sc.name}: failed: {doc['failed']}")
                continue
            c = score(sc, doc["report"])
            result.conversations.append(c)
            ttfa = ", ".join(f"{t * 1000:.0f}" for t in c.ttfas) or "-"
            progress(
                f"{variant.name:<12} {done:>2}/{len(scenarios)} {sc.name}: ttfa {ttfa} ms"
                + (f", false interruptions {c.false_interruptions}" if c.false_interruptions else "")
                + (f", barge-ins caught {c.barge_ins_caught}/{c.barge_ins}" if c.barge_ins else "")
                + (f", cut-offs {c.premature_cutoffs}" if c.premature_cutoffs else "")
                + (f"; expected {'; '.join(c.unmet)}" if c.unmet else "")
            )
        if child.wait() != 0:
            stderr.seek(0)
            result.failed.append(f"the run ended with status {child.returncode}: {stderr.read()[-2000:]}")
    return result


def run(
    variants: list[Variant], scenarios: list[Scenario], concurrency: int, progress: Callable[[str], None]
) -> list[VariantScore]:
    out = []
    for i, v in enumerate(variants, 1):
        progress(
            f"variant {i}/{len(variants)}: {v.name} ({v.about}), "
            f"{len(scenarios)} conversations, {concurrency} at once"
        )
        out.append(run_variant(v, scenarios, concurrency, progress))
    return out


def corpus_paths() -> list[Path]:
    from handler.sim.scenario import CORPUS

    return sorted(CORPUS.glob("*.toml"))
