"""`loadtest` and `bench`: how many calls a worker carries, and the presets side by side."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from handler import config
from handler.cli.common import (
    EnvOption,
    JsonOption,
    UserError,
    app,
    fail,
    progress,
    user_errors,
)
from handler.cli.conversation import caller_logging, conversation_input
from handler.plan import load


@app.command()
@user_errors
def loadtest(
    scenario: Annotated[
        str | None, typer.Argument(help="A bundled scenario or a .toml file; default qa.")
    ] = None,
    concurrency: Annotated[
        str, typer.Option("--concurrency", help="Comma-separated numbers of calls at once (1 is always run).")
    ] = "1,4,8,12",
    calls: Annotated[int, typer.Option("--calls", help="Calls per level (at least its concurrency).")] = 0,
    ramp: Annotated[float, typer.Option("--ramp", help="Seconds over which a level's calls start.")] = 2.0,
    env: EnvOption = None,
    as_json: JsonOption = False,
    plot: Annotated[str | None, typer.Option("--plot", help="Write a PNG of TTFA and CPU per level.")] = None,
    worker_cores: Annotated[
        int | None,
        typer.Option(
            "--worker-cores",
            help="Run the worker's process tree on this many CPUs of its own and the callers, "
            "livekit-server and provider servers on the others; reports calls per worker core.",
        ),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="Comma-separated job executors to measure one after the other: process, thread "
            "(default: the environment's worker.job_executor).",
        ),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="A worker setting key=value (value in TOML) for this run, e.g. room.input_frame_ms=20. "
            "Repeatable.",
        ),
    ] = None,
) -> None:
    """How many concurrent calls one worker carries at acceptable latency, and what a call costs:
    a local livekit-server, worker and load-mode providers (or LIVEKIT_URL's deployment)."""
    from handler.bench import variants as bv

    try:
        levels = sorted({int(c) for c in concurrency.split(",") if c.strip()})
    except ValueError:
        raise UserError(f"--concurrency {concurrency!r}: expected numbers such as 1,4,8,12") from None
    if not levels or levels[0] < 1 or levels[-1] > 64:
        raise UserError(f"--concurrency {concurrency!r}: each level must be 1 to 64 calls at once")
    if ramp < 0:
        raise UserError(f"--ramp {ramp}: must be 0 or more seconds")
    try:
        overrides = bv.parse_pairs(sets or [])
    except bv.VariantError as e:
        raise UserError(f"--set: {e}") from None
    # the worker it starts checks its own providers (load-mode stand-ins for the cloud keys)
    plan = load(env or "production", providers=False)
    settings, registry = plan.settings, plan.registry
    executors = [e.strip() for e in (executor or settings.get("worker.job_executor")).split(",") if e.strip()]
    if not executors:
        raise UserError("--executor: name at least one of process, thread")
    for name in executors:  # every run's configuration, before minutes of running
        load(
            env or "production",
            providers=False,
            overrides={**overrides, "worker.job_executor": name},
            overrides_source="--set/--executor",
            registry=registry,
        )
    sc, _ = conversation_input(scenario, None, registry, "loadtest")

    import asyncio

    from handler.room import caller
    from handler.room import loadtest as lt

    cores = None
    if worker_cores is not None:
        if settings.secret("LIVEKIT_URL"):
            raise UserError("--worker-cores: the worker runs here only without LIVEKIT_URL; unset it")
        try:
            cores = lt.split_cores(worker_cores)
        except ValueError as e:
            raise UserError(str(e)) from None

    caller_logging(plan, "loadtest")
    runs = []
    for name in executors:
        worker_overrides = {**overrides, "worker.job_executor": name}
        try:
            results, best, where, ttfas = asyncio.run(
                lt.loadtest(
                    settings, registry, sc, levels, calls, ramp, progress,
                    cores=cores, worker_overrides=worker_overrides,
                )
            )  # fmt: skip
        except caller.CallError as e:
            print(config.redact(f"voice-handler: {e}", settings.secret_values()), file=sys.stderr)
            raise typer.Exit(e.exit_code) from None
        runs.append((name, results, best, where, ttfas))
    if as_json:
        docs = [{"executor": n, **lt.to_dict(r, b, w, cores), "set": overrides} for n, r, b, w, _ in runs]
        text = json.dumps(docs[0] if len(docs) == 1 else docs, indent=2)
    else:
        text = "\n\n".join(lt.render(r, b, w, cores) for _, r, b, w, _ in runs)
        if len(runs) > 1:
            text += "\n\n" + lt.render_executors([(n, r, b) for n, r, b, _, _ in runs], cores)
    print(config.redact(text, settings.secret_values()))  # failures quote exception text
    if plot:
        name, results, _, _, ttfas = runs[-1]
        lt.plot(results, ttfas, plot)


@app.command()
@user_errors
def bench(
    envs: Annotated[
        str,
        typer.Option(
            "--envs",
            help="Comma-separated variants: the environments (dev, fast, stable, production), `before` (the "
            "guide's starting point) and `livekit` (livekit's defaults).",
        ),
    ] = "before,livekit,dev,fast,stable,production",
    variant: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            help="An extra variant NAME=ENV[:key=value,...] (values in TOML; ENV may be a built-in variant), "
            "e.g. quick=fast:vad.min_silence_duration=0.2. Repeatable.",
        ),
    ] = None,
    scenarios: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario",
            help="A corpus conversation (its name), a bundled scenario or a .toml file; repeatable; "
            "default: the whole corpus.",
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Conversations at once.")] = 4,
    as_json: JsonOption = False,
    plot: Annotated[
        str | None, typer.Option("--plot", help="Write ttfa.png and tradeoff.png into this directory.")
    ] = None,
    with_smart_turn: Annotated[
        bool,
        typer.Option(
            "--with-smart-turn",
            help="Run each variant also as NAME+smart-turn (turn detection by the end-of-turn model) "
            "and print the with/without table.",
        ),
    ] = False,
) -> None:
    """The presets side by side on the conversation corpus: TTFA, false interruptions, barge-ins
    caught, premature cut-offs and log volume, over the cloud stack on local provider servers."""
    from pathlib import Path

    from handler.bench import variants as bv

    if not 1 <= concurrency <= 32:
        raise UserError(f"--concurrency {concurrency}: must be 1 to 32 conversations at once")
    try:
        chosen = [bv.parse(n.strip()) for n in envs.split(",") if n.strip()]
        chosen += [bv.parse(spec) for spec in variant or []]
    except bv.VariantError as e:
        raise UserError(f"--envs/--variant: {e}") from None
    if not chosen:
        raise UserError("--envs: name at least one variant, e.g. --envs production")
    if with_smart_turn:
        chosen = bv.paired_with_smart_turn(chosen)
    names = [v.name for v in chosen]
    if len(set(names)) != len(names):
        raise UserError(
            f"variants named twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}"
        )
    from handler.sim import cloudsim

    for v in chosen:  # every variant's configuration, before minutes of running
        cloudsim.load(v.env, v.overrides, f"bench variant {v.name}")
    corpus = bench_scenarios(scenarios)
    out_dir = Path(plot) if plot else None
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in ("ttfa.png", "tradeoff.png"):
                (out_dir / name).touch()
        except OSError as e:
            raise UserError(f"--plot {plot}: cannot write {e.filename or plot}: {e.strerror}") from None

    from handler.bench import render, run

    voices = sorted({(sc.user_voice, sc.user_rate) for sc in corpus}, key=str)
    header = (
        f"bench: {len(corpus)} conversations, {len(voices)} voices/rates, {concurrency} at once; cloud stack "
        f"(soniox, openai, elevenlabs plugins) on local provider servers in load mode; {cloudsim.describe()}"
    )
    progress(header)
    scores = run.run(chosen, corpus, concurrency, progress)
    if as_json:
        print(json.dumps({"header": header, "variants": [v.to_dict() for v in scores]}, indent=2))
    else:
        print(render.render(scores, header))
    if out_dir is not None:
        from handler.bench.plot import plot as draw

        for path in draw(scores, out_dir):
            progress(f"wrote {path}")
    if any(v.failed for v in scores):
        if as_json:  # the table says why; with --json stdout is the document, so stderr does
            for score in scores:
                for why in score.failed:
                    progress(f"{score.name}: failed: {why}")
        raise typer.Exit(1)


def bench_scenarios(given: list[str] | None) -> list[Any]:
    """The conversations to run, each checked; `bench` knows what was said from the text of each
    utterance, so every spoken sound must be text (`say`), not a WAV file."""
    from handler.sim import scenario as scenarios

    names = given or [f"corpus/{n}" for n in scenarios.corpus_names()]
    out = []
    for name in names:
        path = scenarios.resolve(name)
        if not path.is_file() and (scenarios.CORPUS / f"{name}.toml").is_file():
            path = scenarios.CORPUS / f"{name}.toml"
        try:
            sc = scenarios.load(path)
        except scenarios.ScenarioError as e:
            fail(
                [f"voice-handler: scenario {e.path}: {len(e.problems)} problem(s):"]
                + [f"  - {p}" for p in e.problems]
            )
        wavs = [t for t in sc.turns if t.wav] + [e for t in sc.turns for e in t.during_reply if e.wav]
        if wavs:
            raise UserError(
                f"scenario {sc.path}: bench needs the text of every utterance (say = ...), "
                f"not a WAV file ({len(wavs)} found)"
            )
        out.append(sc)
    if len({sc.path for sc in out}) != len(out):
        raise UserError("--scenario: a conversation is named twice")
    return out
