"""Log lines per minute of conversation, per environment, on the same simulated conversation.

    python measurements/log_volume.py [SCENARIO] [--envs dev,fast,stable,production]

Runs `python -m handler simulate SCENARIO --env E --offline` for each environment (the same
offline STT, LLM and TTS, each environment's own logging policy) and counts the log lines it wrote
(lines that start with a timestamp or a JSON object; the simulator's progress lines and the report
are not logs). The guide's "before" was 500+ lines per minute; its hope, 50-100; our production
target is at most 20.
"""

from __future__ import annotations

import argparse
import re

from offline_run import simulate_offline

LOG_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}|\{)")


def measure(scenario: str, env: str) -> tuple[int, float, dict[str, int]]:
    doc, stderr = simulate_offline(scenario, env)
    minutes = doc["summary"]["duration_s"] / 60
    lines = [line for line in stderr.splitlines() if LOG_LINE.match(line)]
    levels: dict[str, int] = {}
    for line in lines:
        m = re.search(r'"level": "(\w+)"|^\S+ (\w+) ', line)
        level = (m.group(1) or m.group(2)) if m else "?"
        levels[level] = levels.get(level, 0) + 1
    return len(lines), minutes, levels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="qa")
    ap.add_argument("--envs", default="dev,fast,stable,production")
    args = ap.parse_args()
    print(f"scenario {args.scenario}, offline stack; log lines written to stderr")
    print(f"{'env':<11} {'lines':>6} {'minutes':>7} {'lines/min':>9}  by level")
    for env in args.envs.split(","):
        n, minutes, levels = measure(args.scenario, env)
        by_level = ", ".join(f"{k} {v}" for k, v in sorted(levels.items()))
        print(f"{env:<11} {n:>6} {minutes:>7.2f} {n / minutes:>9.1f}  {by_level}")


if __name__ == "__main__":
    main()
