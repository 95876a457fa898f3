"""`python -m handler ...`: start, health, dev, simulate, call, loadtest, bench, web, config show|check,
plugins list, logs analyze.

User mistakes (configuration, input files, missing keys) end in one clear message and exit status
2; bugs keep their traceback. Heavy imports (livekit, onnxruntime, pocketsphinx) happen only in
the commands that need them.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from handler import config
from handler.config import ConfigError
from handler.hookspecs import PROVIDER_STAGES, SINK_STAGES, STAGES, selector
from handler.plan import load
from handler.records import commands as records_commands
from handler.records import writer as records_writer

START = "`start` to reach the LiveKit server"
CALL = "`call` to join a room"

app = typer.Typer(
    help="voice-handler: a LiveKit voice-agent worker whose every stage is a configured plugin.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show or check the effective configuration.", no_args_is_help=True)
plugins_app = typer.Typer(help="Inspect installed plugins.", no_args_is_help=True)
logs_app = typer.Typer(help="Analyze voice-handler and livekit logs.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(plugins_app, name="plugins")
app.add_typer(logs_app, name="logs")
app.add_typer(records_commands.app, name="calls")

EnvOption = Annotated[
    str | None,
    typer.Option(
        "--env", help="Environment (dev, fast, stable, production); default: $ENV_FOR_DYNACONF or dev."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ScenarioArgument = Annotated[
    str | None,
    typer.Argument(help="A bundled scenario (qa, noisy, barge_in) or a .toml file; default qa."),
]
OutOption = Annotated[
    str | None, typer.Option("--out", help="Write report.json, user.wav and agent.wav here.")
]

T = TypeVar("T")


class UserError(Exception):
    """A mistake the user can fix; its message is printed as is (exit status 2)."""


def fail(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)
    raise typer.Exit(2)


def user_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn the user's mistakes into one message and exit status 2, never a traceback."""
    import functools

    from handler.registry import PluginLoadError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            n = len(e.problems)
            fail(
                [f"voice-handler: {n} configuration problem{'s' if n > 1 else ''}:"]
                + [f"  - {line}" for line in e.lines()]
            )
        except (PluginLoadError, UserError) as e:
            fail([f"voice-handler: {e}"])
        raise AssertionError("unreachable")

    return wrapper


# ------------------------------------------------------------------------------ worker


@app.command()
@user_errors
def start(env: EnvOption = None) -> None:
    """Run the worker for production: register with LiveKit and take jobs (SIGTERM drains)."""
    from handler.pipeline import worker

    worker.run(load(env, livekit_for=START), devmode=False)


@app.command()
@user_errors
def health(
    env: EnvOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 4.0,
) -> None:
    """Probe the local worker's health endpoint on worker.port: exit 0 if it answers OK, else 1
    (the container image's HEALTHCHECK; it reads the port from the same layers as `start`)."""
    import urllib.error
    import urllib.request

    port = load(env, check=False, providers=False).settings.get("worker.port")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as r:
            body = r.read(200).decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:  # HTTPError (503: not connected) is a URLError
        print(f"unhealthy: worker.port {port}: {e}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(f"healthy: worker.port {port}: {(body.strip().splitlines() or [''])[0]}")


@app.command()
@user_errors
def dev(
    env: EnvOption = None,
    reload: Annotated[
        bool, typer.Option(help="Restart the worker when a .py, .toml or .env file changes.")
    ] = True,
) -> None:
    """Run the worker in livekit's development mode: no load limit, reload on change."""
    from handler.pipeline import worker

    plan = load(env, livekit_for=START)
    if reload:
        from handler.pipeline.reload import run_with_reload

        raise typer.Exit(
            run_with_reload(
                plan.settings.root,
                [sys.executable, "-m", "handler", "dev", "--no-reload", *(["--env", env] if env else [])],
            )
        )
    worker.run(plan, devmode=True)


# ------------------------------------------------------------------------------ simulate


OFFLINE_STACK = {"stt.provider": "local", "llm.provider": "local", "tts.provider": "local"}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def render_report(report: Any) -> str:
    s = report.summary()
    lines = [
        f"scenario {report.scenario} | env {report.env} | "
        + " ".join(f"{k}={v}" for k, v in report.providers.items()),
        "",
        f"{'#':>2} {'kind':<8} {'ttfa':>6} {'played':>6} {'eou':>6} {'stt':>6} {'llm':>6} {'tts':>6}  int  "
        "false  said -> recognized -> reply",
    ]
    for t in report.turns:
        lines.append(
            f"{t.n:>2} {t.kind:<8} {_ms(t.ttfa):>6} {_ms(t.ttfa_played):>6} {_ms(t.end_of_turn_delay):>6} "
            f"{_ms(t.transcription_delay):>6} {_ms(t.llm_ttft):>6} {_ms(t.tts_ttfb):>6}  "
            f"{'yes' if t.interrupted else 'no':<4} {t.false_interruptions:>5}  "
            f"{t.said!r} -> {t.user_text!r} -> {t.reply_text[:60]!r}"
        )
    lines += [
        "(ms: ttfa = end of user speech -> first agent audio, livekit's measure (as in the turn log lines); "
        "played = the same to the first sample the simulator played; eou = end-of-utterance delay; "
        "stt = transcription delay; llm = time to first token; tts = time to first byte)",
        "",
        f"time to first audio p50 {_ms(s['ttfa_p50'])} ms, p95 {_ms(s['ttfa_p95'])} ms | "
        f"interruptions {s['interruptions']} | false interruptions {s['false_interruptions']} "
        f"({s['false_interruptions_per_min']}/min) | cut-offs {s['premature_cutoffs']} | WER {s['wer']} | "
        f"errors {s['errors']}",
    ]
    b = s["breakdown_p50"]
    if b["floor"] is not None:
        lines.append(
            f"where the time goes (p50): end of turn {_ms(b['end_of_turn_delay'])} + LLM first sentence "
            f"{_ms(b['llm_ttfs'])} (first token {_ms(b['llm_ttft'])}) + TTS first byte {_ms(b['tts_ttfb'])} "
            f"= floor {_ms(b['floor'])} ms; played {_ms(b['ttfa_played'])} ms, handler overhead "
            f"{_ms(b['overhead'])} ms"
        )
    for e in report.errors:
        lines.append(f"error: {e}")
    for k, want in report.expect.items():
        got = s[k]
        lines.append(f"expected {k} {want}: {'ok' if got == want else f'got {got}'}")
    return "\n".join(lines)


def _log_to_file(out_dir: Any, scenario: str) -> str:
    """Point the logging policy's stderr handlers at a file: the same lines at the same levels,
    out of the way of the progress and the table. `--out DIR` holds it as DIR/session.log;
    otherwise it goes to the temporary directory, named after the scenario and the time."""
    import tempfile
    import time
    from pathlib import Path

    if out_dir is not None:
        path = out_dir / "session.log"
    else:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        path = Path(tempfile.gettempdir()) / f"voice-handler-simulate-{scenario}-{stamp}.log"
    from handler.pipeline.session import redirect_log_lines

    try:
        stream = open(path, "w", encoding="utf-8")  # noqa: SIM115 - open for the process's life
    except OSError as e:
        raise UserError(f"cannot write the log file {path}: {e.strerror}") from None
    redirect_log_lines(stream)
    return str(path)


@app.command()
@user_errors
def simulate(
    scenario: ScenarioArgument = None,
    env: EnvOption = None,
    as_json: JsonOption = False,
    out: OutOption = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Use the local STT, LLM and TTS with this environment's other settings."
        ),
    ] = False,
    cloud_fakes: Annotated[
        bool,
        typer.Option(
            "--cloud-fakes",
            help="Run the cloud STT, LLM and TTS (soniox, openai, elevenlabs) against local servers that "
            "speak their wire protocols with typical cloud latencies, with this environment's other "
            "settings; no keys or network needed.",
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Write the environment's log lines to stderr instead of a log file (named at the start).",
        ),
    ] = False,
) -> None:
    """Run a whole conversation from audio, with no LiveKit server, and report its latency."""
    if offline and cloud_fakes:
        raise UserError("--offline and --cloud-fakes exclude each other: pick the local or the cloud stack")
    if cloud_fakes:
        from handler.sim import cloudsim

        plan = cloudsim.load(env)
    else:
        plan = load(env, overrides=OFFLINE_STACK if offline else None, overrides_source="--offline")
    settings, registry = plan.settings, plan.registry
    sc, out_dir = _conversation_input(scenario, out, registry, "simulate")

    import asyncio

    from handler import sim

    plan.configure_logging()
    if not verbose:
        log_path = _log_to_file(out_dir, sc.name)
        _progress(f"{sc.name} under {settings.env}: log lines in {log_path} (-v shows them here)")
    run = cloudsim.simulate if cloud_fakes else sim.simulate
    report, clock = asyncio.run(run(settings, registry, sc, _progress))
    records_writer.finish(_progress)
    _write_report(report, clock, as_json, out_dir)
    if report.ended:  # a stage down for good: the run is a failure, and says why
        print(f"voice-handler: the session ended early: {report.ended}", file=sys.stderr)
        raise typer.Exit(1)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _conversation_input(
    scenario: str | None, out: str | None, registry: Any, command: str
) -> tuple[Any, Any]:
    """The scenario (checked, its audio files too) and the --out directory (writable), before a
    run of many seconds, not after it."""
    from pathlib import Path

    from handler import audio
    from handler.sim import scenario as scenarios

    try:
        sc = scenarios.load(scenarios.resolve(scenario))
    except scenarios.ScenarioError as e:
        fail(
            [f"voice-handler: scenario {e.path}: {len(e.problems)} problem(s):"]
            + [f"  - {p}" for p in e.problems]
        )
    if "local" not in registry.names("tts"):
        raise UserError(f"{command} speaks text turns with the `local` TTS plugin, which is not installed")
    out_dir = Path(out) if out else None
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in ("report.json", "user.wav", "agent.wav"):
                (out_dir / name).touch()
        except OSError as e:
            raise UserError(f"--out {out}: cannot write {e.filename or out}: {e.strerror}") from None
    try:
        scenarios.check_audio_files(sc)
    except audio.AudioFileError as e:
        raise UserError(f"scenario {sc.path}: {e}") from None
    return sc, out_dir


def _write_report(report: Any, clock: Any, as_json: bool, out_dir: Any) -> None:
    """The table (or JSON) on stdout; with --out, report.json and the two tracks on one timeline."""
    from handler import audio

    doc = report.to_dict()
    print(json.dumps(doc, indent=2) if as_json else render_report(report))
    if out_dir is not None:
        import numpy as np

        try:
            (out_dir / "report.json").write_text(json.dumps(doc, indent=2))
            audio.write_wav(out_dir / "user.wav", np.frombuffer(bytes(clock.user), np.int16))
            audio.write_wav(out_dir / "agent.wav", np.frombuffer(bytes(clock.agent), np.int16))
        except OSError as e:
            raise UserError(f"--out {out_dir}: cannot write {e.filename}: {e.strerror}") from None


def _caller_logging(plan: Any, command: str) -> None:
    """The environment's logging policy is the agent's; a caller shows only what went wrong.
    livekit's rtc core logs each failed connection attempt and its teardown: the caller's one
    message says what went wrong and what to check instead."""
    import logging

    plan.overridden({"logging.level": "WARNING"}, command).configure_logging()
    logging.getLogger("livekit").setLevel(logging.CRITICAL)


@app.command()
@user_errors
def call(
    scenario: ScenarioArgument = None,
    room: Annotated[
        str | None, typer.Option("--room", help="Room to create and call in; default: a new random name.")
    ] = None,
    env: EnvOption = None,
    as_json: JsonOption = False,
    out: OutOption = None,
    agent_timeout: Annotated[
        float, typer.Option("--agent-timeout", help="Seconds to wait for a worker to take the call.")
    ] = 30.0,
) -> None:
    """Call the agent in a real LiveKit room (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET) and
    report client-side latency per turn: a regression test for a deployed agent."""
    # the caller's side: the agent's providers are the worker's business
    plan = load(env, livekit_for=CALL, providers=False)
    settings, registry = plan.settings, plan.registry
    sc, out_dir = _conversation_input(scenario, out, registry, "call")

    import asyncio

    from handler.room import caller

    target = caller.Target(
        url=settings.secret("LIVEKIT_URL") or "",
        api_key=settings.secret("LIVEKIT_API_KEY") or "",
        api_secret=settings.secret("LIVEKIT_API_SECRET") or "",
        agent_name=settings.get("worker.agent_name"),
        room=room or "",
    )
    _caller_logging(plan, "call")
    try:
        caller.check_url(target.url)
        report, clock, failure = asyncio.run(
            caller.call(settings, registry, sc, target, _progress, agent_timeout=agent_timeout)
        )
    except caller.CallError as e:
        print(f"voice-handler: {e}", file=sys.stderr)
        raise typer.Exit(e.exit_code) from None
    _write_report(report, clock, as_json, out_dir)
    if failure is not None:
        print(f"voice-handler: {failure}", file=sys.stderr)
        raise typer.Exit(failure.exit_code)


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
    sc, _ = _conversation_input(scenario, None, registry, "loadtest")

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

    _caller_logging(plan, "loadtest")
    runs = []
    for name in executors:
        worker_overrides = {**overrides, "worker.job_executor": name}
        try:
            results, best, where, ttfas = asyncio.run(
                lt.loadtest(
                    settings, registry, sc, levels, calls, ramp, _progress,
                    cores=cores, worker_overrides=worker_overrides,
                )
            )  # fmt: skip
        except caller.CallError as e:
            print(f"voice-handler: {e}", file=sys.stderr)
            raise typer.Exit(e.exit_code) from None
        runs.append((name, results, best, where, ttfas))
    if as_json:
        docs = [{"executor": n, **lt.to_dict(r, b, w, cores), "set": overrides} for n, r, b, w, _ in runs]
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    else:
        print("\n\n".join(lt.render(r, b, w, cores) for _, r, b, w, _ in runs))
        if len(runs) > 1:
            print("\n" + lt.render_executors([(n, r, b) for n, r, b, _, _ in runs], cores))
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
    corpus = _bench_scenarios(scenarios)
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
    _progress(header)
    scores = run.run(chosen, corpus, concurrency, _progress)
    if as_json:
        print(json.dumps({"header": header, "variants": [v.to_dict() for v in scores]}, indent=2))
    else:
        print(render.render(scores, header))
    if out_dir is not None:
        from handler.bench.plot import plot as draw

        for path in draw(scores, out_dir):
            _progress(f"wrote {path}")
    if any(v.failed for v in scores):
        if as_json:  # the table says why; with --json stdout is the document, so stderr does
            for score in scores:
                for why in score.failed:
                    _progress(f"{score.name}: failed: {why}")
        raise typer.Exit(1)


def _bench_scenarios(given: list[str] | None) -> list[Any]:
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


# ------------------------------------------------------------------------------ web


@app.command()
@user_errors
def web(
    env: EnvOption = None,
    local: Annotated[
        bool, typer.Option("--local", help="Also start livekit-server and a worker here (offline under dev).")
    ] = False,
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")] = 8090,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; beyond 127.0.0.1 needs --access-token.")
    ] = "127.0.0.1",
    access_token: Annotated[
        str | None,
        typer.Option("--access-token", help="Required beyond loopback (or VOICE_HANDLER_WEB_TOKEN)."),
    ] = None,
) -> None:
    """A web page to talk to the agent in a LiveKit room (LIVEKIT_* or --local), and the Calls pages."""
    from handler.web import serve

    try:
        serve.run(env, local=local, host=host, port=port, access_token=access_token)
    except serve.WebError as e:
        raise UserError(str(e)) from None


# ------------------------------------------------------------------------------ config


def _flatten(settings: config.Settings) -> dict[str, dict[str, Any]]:
    return {
        path: {"value": value, "source": settings.source(path)} for path, value in config._walk(settings.data)
    }


@config_app.command("show")
@user_errors
def config_show(env: EnvOption = None, as_json: JsonOption = False) -> None:
    """The effective settings and where each value came from (secrets redacted)."""
    # shows what is there even when it would not pass `config check`
    settings = load(env, check=False).settings
    values = _flatten(settings)
    secrets = {
        name: {
            "set": settings.secret(name) is not None,
            "value": config.REDACTED if settings.secret(name) else None,
            "source": settings.secret_source(name),
        }
        for name in config.SECRETS
    }
    if as_json:
        doc = {"env": settings.env, "root": str(settings.root), "settings": values, "secrets": secrets}
        # a secret pasted into a setting is redacted here as everywhere
        print(config.redact(json.dumps(doc, indent=2), settings.secret_values()))
        return
    lines = [f"environment: {settings.env}    (root: {settings.root})"]
    width = max(len(k) for k in values)
    for key, v in values.items():
        lines.append(f"  {key:<{width}}  {json.dumps(v['value']):<28}  {v['source']}")
    lines.append("secrets:")
    for name, s in secrets.items():
        lines.append(f"  {name:<{width}}  {(s['value'] or 'not set'):<28}  {s['source'] or ''}")
    print(config.redact("\n".join(lines), settings.secret_values()))


@config_app.command("check")
@user_errors
def config_check(
    env: EnvOption = None,
    for_start: Annotated[
        bool, typer.Option("--start", help="Also require the LiveKit credentials `start` needs.")
    ] = False,
) -> None:
    """Validate the configuration: every problem at once, exit status 2 if any."""
    settings = load(env, livekit_for=START if for_start else None).settings
    chosen = ", ".join(f"{s}={settings.get(selector(s))}" for s in PROVIDER_STAGES)
    print(f"configuration OK (environment {settings.env}: {chosen})")


# ------------------------------------------------------------------------------ plugins


@plugins_app.command("list")
@user_errors
def plugins_list(env: EnvOption = None, as_json: JsonOption = False) -> None:
    """Every stage, its available providers, the one this environment selects, and their origin."""
    plan = load(env, check=False)
    settings, registry = plan.settings, plan.registry
    stages = {
        stage: {
            "selected": settings.get(selector(stage)),
            "providers": [
                {
                    "name": p.name,
                    "origin": p.origin,
                    "selected": p.name in registry.selected(settings, stage)
                    if stage in SINK_STAGES
                    else p.name == settings.get(selector(stage)),
                }
                for p in registry.providers()
                if p.stage == stage
            ],
        }
        for stage in STAGES
    }
    overridden = [{"stage": p.stage, "name": p.name, "origin": p.origin} for p in registry.overridden]
    plugins = [{"name": n, "origin": o} for n, o in registry.plugins()]
    if as_json:
        doc = {"env": settings.env, "stages": stages, "overridden": overridden, "plugins": plugins}
        print(json.dumps(doc, indent=2))
        return
    print(f"environment: {settings.env}")
    for stage, info in stages.items():
        print(f"{stage}:")
        for p in info["providers"]:
            mark = "*" if p["selected"] else " "
            print(f"  {mark} {p['name']:<14} {p['origin']}")
        if not any(p["selected"] for p in info["providers"]) and info["selected"] != []:
            print(f"  ! selected provider {info['selected']!r} is not installed")
    for p in overridden:
        print(f"(overridden: {p['stage']}/{p['name']} from {p['origin']})")
    print("plugins: " + ", ".join(f"{p['name']} ({p['origin']})" for p in plugins))


# ------------------------------------------------------------------------------ logs


@logs_app.command("analyze")
@user_errors
def logs_analyze(
    files: Annotated[list[str], typer.Argument(help="Log files; - reads standard input.")],
    as_json: JsonOption = False,
    plot: Annotated[str | None, typer.Option("--plot", help="Write a PNG timeline here.")] = None,
    slow_llm_ms: Annotated[float, typer.Option(help="LLM responses slower than this are slow.")] = 1000.0,
    false_per_minute_target: Annotated[
        float, typer.Option(help="Acceptable false interruptions per minute.")
    ] = 1.0,
) -> None:
    """The guide's grep recipes in one report: false interruptions, slow LLM, VAD warnings,
    errors and retries, log volume and time-to-first-audio percentiles, each with advice."""
    from handler import logs

    try:
        report = logs.analyze(files, slow_llm_ms=slow_llm_ms, false_per_minute_target=false_per_minute_target)
    except logs.LogInputError as e:
        raise UserError(str(e)) from None
    if plot:
        try:
            logs.plot(report, plot)
        except OSError as e:
            raise UserError(f"cannot write plot {plot}: {e.strerror}") from None
    print(json.dumps(report.to_dict(), indent=2) if as_json else logs.render_text(report))


def main() -> None:
    try:
        app()
    except SystemExit as done:
        _exit_before_finalization(done.code)
    _exit_before_finalization(0)


def _exit_before_finalization(code: int | str | None) -> None:
    """Exit as Python would, minus the interpreter's finalization.

    livekit's native runtime (the rtc FFI: resamplers, rooms) keeps tokio threads that call back
    into Python, to forward its logs about once a second. A callback that lands while the
    interpreter finalizes is ended by CPython with pthread_exit, which unwinds through Rust frames
    that cannot unwind, and the process aborts ("panic in a function that cannot unwind", exit
    134) after the command succeeded. So do what finalization would do for us (join non-daemon
    threads, run atexit: the FFI's dispose, the last telemetry batch; flush output) and leave with
    os._exit before any thread can be killed that way.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_Finalize calls first
    atexit._run_exitfuncs()  # logging's own shutdown is one of them
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`| head`): nothing more to say
            stream.flush()
    os._exit(status)
