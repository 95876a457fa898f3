"""Smart Turn v3 on this machine: the model's own inference time, and what it changes for a user
who pauses mid-sentence.

    python benchmarks/smart_turn.py inference [--runs 60] [--threads 1,2]
    python benchmarks/smart_turn.py cutoffs [--envs fast,production] [--gaps 1.5] [--voices en-us]
                                            [--rest TEXT]
    python benchmarks/smart_turn.py complete [--envs fast,production] [--scenario qa]

`inference`: one prediction as the detector makes it (Whisper features of the last 8 s, then the
ONNX model), timed `--runs` times per thread count over espeak-ng clips of complete and unfinished
sentences; p50/p95 in ms, and each clip's probability (the window is always 8 s, so the cost does
not depend on the clip).

`cutoffs`: `python -m handler simulate <mid_sentence> --env E --offline --json` (the scenario of
`handler.testing.pauses`: "my order number is, um," + a silent gap + "four two seven", then a
complete question) for each environment, gap and voice, with turn.detection "vad" and
"smart-turn": whether the agent cut the user off, and time to first audio of both turns.

`complete`: the same with a scenario of complete questions (`qa`): time to first audio per turn,
p50 and p95, with and without the model. Each simulate run takes 15-30 s of real time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from offline_run import simulate_offline

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's own handler/plugins

from handler.testing import pauses  # noqa: E402

CLIPS = (
    "what is the weather like today",
    "what time do you open tomorrow",
    "where is my order",
    "thank you very much",
    "my order number is, um,",
    "i would like to,",
)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def inference(runs: int, threads: list[int]) -> None:
    from handler_plugins.engines.smart_turn import load

    clips = [pauses.spoken(t) for t in CLIPS]
    silence = np.zeros(3200, np.int16)  # livekit asks after 200 ms of silence
    clips = [np.concatenate([c, silence]) for c in clips]
    print(f"Smart Turn v3 inference, {runs} predictions per row, ms")
    print(
        f"{'threads':>7} {'features p50':>12} {'p95':>6} {'onnx p50':>8} {'p95':>6} "
        f"{'total p50':>9} {'p95':>6}"
    )
    for n in threads:
        model = load(n)
        model.probability(clips[0])  # the first run allocates: not what a turn pays
        feats, onnx, total = [], [], []
        for i in range(runs):
            pcm = clips[i % len(clips)]
            t0 = time.perf_counter()
            f = model.features(pcm)
            t1 = time.perf_counter()
            model.run(f)
            t2 = time.perf_counter()
            feats.append((t1 - t0) * 1000)
            onnx.append((t2 - t1) * 1000)
            total.append((t2 - t0) * 1000)
        print(
            f"{n:>7} {pct(feats, 50):>12.1f} {pct(feats, 95):>6.1f} {pct(onnx, 50):>8.1f} "
            f"{pct(onnx, 95):>6.1f} {pct(total, 50):>9.1f} {pct(total, 95):>6.1f}"
        )
    model = load(threads[0])
    print("probabilities (espeak-ng en-us, 175 wpm, + 200 ms silence):")
    for text, pcm in zip(CLIPS, clips, strict=True):
        print(f"  {model.probability(pcm):.2f}  {text!r}")


def cutoffs(envs: list[str], gaps: list[float], voices: list[str], rest: str) -> None:
    print(
        f"'{pauses.FIRST}' + gap + '{rest}', then '{pauses.QUESTION}'; offline stack; "
        "ttfa in ms (livekit's e2e)"
    )
    print(
        f"{'env':<11} {'gap':>4} {'voice':<9} {'detection':<10} {'cut off':>7} {'ttfa paused':>11} "
        f"{'ttfa question':>13}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for voice in voices:
            for gap in gaps:
                where = Path(tmp) / f"{voice}-{gap}"
                where.mkdir()
                scenario = str(pauses.write_scenario(where, gap, voice=voice, rest=rest))
                for env in envs:
                    for detection in ("vad", "smart-turn"):
                        doc, _ = simulate_offline(scenario, env, {"HANDLER_TURN__DETECTION": detection})
                        paused, question = doc["turns"][:2]
                        ms = lambda v: "-" if v is None else f"{v * 1000:.0f}"  # noqa: E731
                        print(
                            f"{env:<11} {gap:>4} {voice:<9} {detection:<10} "
                            f"{'yes' if paused['premature_cutoffs'] else 'no':>7} {ms(paused['ttfa']):>11} "
                            f"{ms(question['ttfa']):>13}  {'; '.join(doc['errors'])[:120]}",
                            flush=True,
                        )


def complete_turns(envs: list[str], scenario: str) -> None:
    print(f"complete utterances ({scenario}); offline stack; ttfa per turn and p50/p95 in ms")
    for env in envs:
        for detection in ("vad", "smart-turn"):
            doc, _ = simulate_offline(scenario, env, {"HANDLER_TURN__DETECTION": detection})
            s = doc["summary"]
            per_turn = " ".join("-" if t["ttfa"] is None else f"{t['ttfa'] * 1000:.0f}" for t in doc["turns"])
            print(
                f"{env:<11} {detection:<10} p50 {s['ttfa_p50'] * 1000:>5.0f} p95 {s['ttfa_p95'] * 1000:>5.0f}"
                f"  turns: {per_turn}  cut-offs {s['premature_cutoffs']}",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    inf = sub.add_parser("inference")
    inf.add_argument("--runs", type=int, default=60)
    inf.add_argument("--threads", default="1,2")
    cut = sub.add_parser("cutoffs")
    cut.add_argument("--envs", default="fast,production")
    cut.add_argument("--gaps", default="1.5")
    cut.add_argument("--voices", default="en-us")
    cut.add_argument("--rest", default=pauses.REST, help="what the user says after the pause")
    complete = sub.add_parser("complete")
    complete.add_argument("--envs", default="fast,production")
    complete.add_argument("--scenario", default="qa")
    args = ap.parse_args()
    if args.what == "inference":
        inference(args.runs, [int(t) for t in args.threads.split(",")])
    elif args.what == "cutoffs":
        gaps = [float(g) for g in args.gaps.split(",")]
        cutoffs(args.envs.split(","), gaps, args.voices.split(","), args.rest)
    else:
        complete_turns(args.envs.split(","), args.scenario)


if __name__ == "__main__":
    main()
