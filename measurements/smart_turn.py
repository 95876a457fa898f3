"""Smart Turn v3 on this machine: the model's own inference time, and what it changes for a user
who pauses mid-sentence.

    python measurements/smart_turn.py inference [--runs 60] [--threads 1,2]
    python measurements/smart_turn.py options [--rounds 10]
    python measurements/smart_turn.py corpus
    python measurements/smart_turn.py cutoffs [--envs fast,production] [--gaps 1.5] [--voices en-us]
                                            [--rest TEXT]
    python measurements/smart_turn.py complete [--envs fast,production] [--scenario qa]

`inference`: one prediction as the detector makes it (Whisper features of the last 8 s, then the
ONNX model), timed `--runs` times per thread count over espeak-ng clips of complete and unfinished
sentences; p50/p95 in ms, and each clip's probability (the window is always 8 s, so the cost does
not depend on the clip).

`options`: what makes a prediction slow, one row per setting, measured in interleaved rounds (a
busy neighbour then weighs on every row alike): numpy's BLAS threads (the feature extractor's
matrix product), the ONNX session's intra-op threads, graph optimization level, execution mode
and thread spinning. The first row is the detector's setting.

`corpus`: the model's end-of-turn probability for every turn of `bench`'s corpus in its own voice
and rate (+ 200 ms of silence, when livekit asks): complete turns at their end, turns with a
mid-sentence pause at the pause and at their end. A threshold between the two groups holds the
pauses and lets complete turns go.

`cutoffs`: `python -m handler simulate <mid_sentence> --env E --offline --json` (the scenario of
`support.pauses`: "my order number is, um," + a silent gap + "four two seven", then a
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
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # test-only helpers (support)

from support import pauses  # noqa: E402

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


def options(rounds: int, per_round: int = 8) -> None:
    import onnxruntime as ort
    from threadpoolctl import threadpool_limits

    from handler_plugins.engines.smart_turn import load
    from handler_plugins.smart_turn import model_files

    model = load(1)  # its features; the rows below build their own sessions
    onnx = str(model_files()[0])
    clip = np.concatenate([pauses.spoken(CLIPS[1]), np.zeros(3200, np.int16)])
    level = ort.GraphOptimizationLevel
    rows = {  # name: (blas threads, onnx threads, optimization, execution mode, spinning)
        "detector: blas 1, onnx 1, all, sequential": (1, 1, level.ORT_ENABLE_ALL, "seq", False),
        "blas 2 (numpy's default here)": (2, 1, level.ORT_ENABLE_ALL, "seq", False),
        "onnx threads 2": (1, 2, level.ORT_ENABLE_ALL, "seq", False),
        "optimization extended": (1, 1, level.ORT_ENABLE_EXTENDED, "seq", False),
        "optimization basic": (1, 1, level.ORT_ENABLE_BASIC, "seq", False),
        "execution parallel": (1, 1, level.ORT_ENABLE_ALL, "par", False),
        "spinning on": (1, 1, level.ORT_ENABLE_ALL, "seq", True),
    }
    sessions = {}
    for name, (_, threads, opt, mode, spin) in rows.items():
        o = ort.SessionOptions()
        o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
        o.graph_optimization_level = opt
        parallel = mode == "par"
        o.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
        for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
            o.add_session_config_entry(key, "1" if spin else "0")
        sessions[name] = ort.InferenceSession(onnx, sess_options=o, providers=["CPUExecutionProvider"])
    feats: dict[str, list[float]] = {n: [] for n in rows}
    total: dict[str, list[float]] = {n: [] for n in rows}
    for _ in range(rounds):
        for name, (blas, *_rest) in rows.items():
            with threadpool_limits(limits=blas, user_api="blas"):
                session = sessions[name]
                session.run(None, {"input_features": model.features(clip)})  # warm after a switch
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    f = model.features(clip)
                    t1 = time.perf_counter()
                    session.run(None, {"input_features": f})
                    t2 = time.perf_counter()
                    feats[name].append((t1 - t0) * 1000)
                    total[name].append((t2 - t0) * 1000)
    print(f"Smart Turn v3, one prediction (features + model), {rounds} rounds x {per_round} per row, ms")
    print(f"{'setting':<44} {'features p50':>12} {'p95':>6} {'total p50':>9} {'p95':>6}")
    for name in rows:
        f, t = feats[name], total[name]
        print(f"{name:<44} {pct(f, 50):>12.1f} {pct(f, 95):>6.1f} {pct(t, 50):>9.1f} {pct(t, 95):>6.1f}")


def corpus() -> None:
    from handler.sim import scenario
    from handler_plugins.engines.smart_turn import load

    model = load(1)
    silence = np.zeros(3200, np.int16)  # livekit asks after 200 ms of silence
    complete: list[float] = []
    at_pause: list[float] = []
    print("Smart Turn v3 end-of-turn probability, bench's corpus, each in its voice and rate + 200 ms")
    for name in scenario.corpus_names():
        sc = scenario.load(scenario.resolve(f"corpus/{name}"))
        voice, rate = sc.user_voice, sc.user_rate or 175
        for t in sc.turns:
            if t.say is None:
                continue
            parts = [pauses.spoken(p, voice=voice, rate=rate) for p in (t.parts or (t.say,))]
            gap = np.zeros(round(t.hesitation * 16000), np.int16)
            whole = np.concatenate([x for p in parts for x in (p, gap)][:-1] + [silence])
            end = model.probability(whole)
            if len(parts) > 1:
                mid = model.probability(np.concatenate([parts[0], silence]))
                at_pause.append(mid)
                print(f"  paused   {mid:.2f} at the pause, {end:.2f} at the end  {voice}@{rate} {t.say!r}")
            else:
                print(f"  complete {end:.2f}  {voice}@{rate} {t.say!r}")
            complete.append(end)
    print(
        f"turn ends (complete, and paused turns at their end): n {len(complete)}, min {min(complete):.2f}, "
        f"p5 {pct(complete, 5):.2f}, p50 {pct(complete, 50):.2f}"
    )
    values = sorted(round(p, 2) for p in at_pause)
    print(f"mid-sentence pauses: n {len(at_pause)}, max {max(at_pause):.2f}, values {values}")


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
    opts = sub.add_parser("options")
    opts.add_argument("--rounds", type=int, default=10)
    sub.add_parser("corpus")
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
    elif args.what == "options":
        options(args.rounds)
    elif args.what == "corpus":
        corpus()
    elif args.what == "cutoffs":
        gaps = [float(g) for g in args.gaps.split(",")]
        cutoffs(args.envs.split(","), gaps, args.voices.split(","), args.rest)
    else:
        complete_turns(args.envs.split(","), args.scenario)


if __name__ == "__main__":
    main()
