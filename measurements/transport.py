"""What the room costs: the same conversation room-less (`simulate`) and through a real LiveKit room
(`call` against `python -m handler start`), side by side.

    python measurements/transport.py [SCENARIO] [--env dev] [--runs 2]

Starts a livekit-server on 127.0.0.1 (installing it first if needed: see
`python -m handler.fakes.livekit_server install`) and a worker, then runs the scenario `--runs`
times each way and prints time to first audio p50/p95 over all turns:

- simulate: end of user speech -> first agent audio played, in-process, no transport;
- call: end of user speech as sent -> first agent audio received by the caller: WebRTC both ways,
  Opus, jitter buffers, the worker's job process; with this project's room input settings
  (`room.input_sample_rate`, `room.input_frame_ms`), and with livekit's defaults for comparison.

The difference at p50 is the room's cost. The worker's own measure (livekit's e2e latency, from its
VAD's end of speech to its first audio pushed) is printed too: the call's TTFA minus it is what
happens outside the agent's view (the network and the codec on the way in and out).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from handler import config  # noqa: E402
from handler.fakes.livekit_server import LiveKitServer, install  # noqa: E402
from handler.fakes.worker_process import WorkerProcess, clean_env  # noqa: E402
from handler.pipeline.turns import percentile  # noqa: E402
from handler.sim import scenario as scenarios  # noqa: E402

LIVEKIT_DEFAULTS = {"HANDLER_ROOM__INPUT_SAMPLE_RATE": "24000", "HANDLER_ROOM__INPUT_FRAME_MS": "50"}


def run_json(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "handler", *args, "--json"], capture_output=True, text=True, env=env, cwd=cwd
    )
    if out.returncode != 0:
        sys.exit(f"`{' '.join(args)}` failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def ttfas(docs: list[dict[str, Any]], key: str = "ttfa") -> list[float]:
    return [t[key] for d in docs for t in d["turns"] if t[key] is not None]


def worker_e2e(worker: WorkerProcess) -> list[float]:
    return [int(ms) / 1000 for ms in re.findall(r"handler\.metrics turn .*?ttfa_ms=(\d+)", worker.stderr)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="qa")
    ap.add_argument("--env", default="dev", help="environment of both runs (default dev: the offline stack)")
    ap.add_argument("--runs", type=int, default=2, help="conversations each way")
    args = ap.parse_args()

    sc = scenarios.load(scenarios.resolve(args.scenario))
    with tempfile.TemporaryDirectory(prefix="transport-") as tmp:
        root = Path(tmp)
        base = {config.ENV_VAR: args.env, config.ROOT_VAR: str(root)}
        print(f"scenario {args.scenario}, env {args.env}, {args.runs} run(s) each way", file=sys.stderr)
        sim = [run_json(["simulate", args.scenario], clean_env(**base), root) for _ in range(args.runs)]

        # simulate's `ttfa` is livekit's e2e latency, which starts at its VAD's end of speech (about
        # 0.1 s after the last voiced sample: the VAD's windows and its probability's fall); `call`
        # can only start at the last voiced sample as sent. `ttfa_played` starts there too and ends
        # at the first sample played: the same span as the caller's
        rows: list[tuple[str, list[float], list[float]]] = [
            ("simulate (no room)", ttfas(sim, "ttfa_played"), ttfas(sim))
        ]
        with LiveKitServer(install(), root) as lk:
            for label, extra in (
                ("call (room, ours)", {}),
                ("call (room, livekit defaults)", LIVEKIT_DEFAULTS),
            ):
                worker = WorkerProcess(
                    clean_env(
                        **base,
                        **lk.env(),
                        **extra,
                        HANDLER_WORKER__PORT="0",
                        HANDLER_WORKER__LOAD_THRESHOLD="inf",  # the callers share the machine
                        HANDLER_LOGGING__LEVEL="INFO",
                        HANDLER_STT__LOCAL__PHRASES=json.dumps(sc.recognizer_phrases()),
                    ),
                    root,
                )
                try:
                    worker.wait_for_log("registered worker", 30)
                    env = clean_env(**base, **lk.env())
                    calls = [run_json(["call", args.scenario], env, root) for _ in range(args.runs)]
                    worker.wait_for_log("session summary", 20, count=args.runs)
                    rows.append((label, ttfas(calls), worker_e2e(worker)))
                finally:
                    worker.terminate()

    ms = lambda v: "-" if v is None else f"{v * 1000:.0f}"  # noqa: E731
    print(f"{'':<31} {'ttfa p50':>8} {'ttfa p95':>8} {'vs simulate p50':>15} {'worker e2e p50':>14} turns")
    sim_p50 = percentile(rows[0][1], 50) or 0.0
    for label, values, e2e in rows:
        p50, p95 = percentile(values, 50), percentile(values, 95)
        diff = "" if label.startswith("simulate") or p50 is None else f"{(p50 - sim_p50) * 1000:+.0f}"
        print(f"{label:<31} {ms(p50):>8} {ms(p95):>8} {diff:>15} {ms(percentile(e2e, 50)):>14} {len(values)}")
    print(
        "ms; ttfa = last voiced sample of the user's speech (as sent) -> first agent audio (simulate: played;"
        " call: received by the caller); worker e2e = livekit's own measure in the agent (its VAD's end of"
        " speech -> audio pushed)"
    )


if __name__ == "__main__":
    main()
