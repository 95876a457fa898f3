"""`simulate` and `call`: one conversation, offline or as a caller in a real room, and its report."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer

from handler import config
from handler.cli.common import (
    CALL,
    EnvOption,
    JsonOption,
    OutOption,
    ScenarioArgument,
    UserError,
    app,
    fail,
    ms,
    progress,
    user_errors,
)
from handler.plan import load
from handler.records import writer as records_writer

OFFLINE_STACK = {"stt.provider": "local", "llm.provider": "local", "tts.provider": "local"}


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
            f"{t.n:>2} {t.kind:<8} {ms(t.ttfa):>6} {ms(t.ttfa_played):>6} {ms(t.end_of_turn_delay):>6} "
            f"{ms(t.transcription_delay):>6} {ms(t.llm_ttft):>6} {ms(t.tts_ttfb):>6}  "
            f"{'yes' if t.interrupted else 'no':<4} {t.false_interruptions:>5}  "
            f"{t.said!r} -> {t.user_text!r} -> {t.reply_text[:60]!r}"
        )
    lines += [
        "(ms: ttfa = end of user speech -> first agent audio, livekit's measure (as in the turn log lines); "
        "played = the same to the first sample the simulator played; eou = end-of-utterance delay; "
        "stt = transcription delay; llm = time to first token; tts = time to first byte)",
        "",
        f"time to first audio p50 {ms(s['ttfa_p50'])} ms, p95 {ms(s['ttfa_p95'])} ms | "
        f"interruptions {s['interruptions']} | false interruptions {s['false_interruptions']} "
        f"({s['false_interruptions_per_min']}/min) | cut-offs {s['premature_cutoffs']} | WER {s['wer']} | "
        f"errors {s['errors']}",
    ]
    b = s["breakdown_p50"]
    if b["floor"] is not None:
        lines.append(
            f"where the time goes (p50): end of turn {ms(b['end_of_turn_delay'])} + LLM first sentence "
            f"{ms(b['llm_ttfs'])} (first token {ms(b['llm_ttft'])}) + TTS first byte {ms(b['tts_ttfb'])} "
            f"= floor {ms(b['floor'])} ms; played {ms(b['ttfa_played'])} ms, handler overhead "
            f"{ms(b['overhead'])} ms"
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
    otherwise it goes to a new private directory in the temporary one. Either way the file is the
    user's alone (0600): at DEBUG it holds what was said, and a predictable name in a shared /tmp
    is one another user could plant first."""
    import tempfile
    from pathlib import Path

    from handler.pipeline.session import redirect_log_lines

    try:
        if out_dir is not None:
            path = out_dir / "session.log"
        else:
            path = Path(tempfile.mkdtemp(prefix=f"voice-handler-simulate-{scenario}-")) / "session.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: make it private
        stream = open(fd, "w", encoding="utf-8")  # noqa: SIM115 - open for the process's life
    except OSError as e:
        raise UserError(f"cannot write the log file {e.filename or out_dir}: {e.strerror}") from None
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
    sc, out_dir = conversation_input(scenario, out, registry, "simulate")

    import asyncio

    from handler import sim

    plan.configure_logging()
    if not verbose:
        log_path = _log_to_file(out_dir, sc.name)
        progress(f"{sc.name} under {settings.env}: log lines in {log_path} (-v shows them here)")
    run = cloudsim.simulate if cloud_fakes else sim.simulate
    report, clock = asyncio.run(run(settings, registry, sc, progress))
    records_writer.finish(progress)
    write_report(report, clock, as_json, out_dir, settings.secret_values())
    if report.ended:  # a stage down for good: the run is a failure, and says why
        print(
            config.redact(
                f"voice-handler: the session ended early: {report.ended}", settings.secret_values()
            ),
            file=sys.stderr,
        )
        raise typer.Exit(1)


def conversation_input(scenario: str | None, out: str | None, registry: Any, command: str) -> tuple[Any, Any]:
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


def write_report(report: Any, clock: Any, as_json: bool, out_dir: Any, secrets: list[str]) -> None:
    """The table (or JSON) on stdout; with --out, report.json and the two tracks on one timeline.
    Redacted: errors and notes quote exception text, which may quote a key or a token."""
    from handler import audio

    doc = report.to_dict()
    text = json.dumps(doc, indent=2)
    print(config.redact(text if as_json else render_report(report), secrets))
    if out_dir is not None:
        import numpy as np

        try:
            (out_dir / "report.json").write_text(config.redact(text, secrets))
            audio.write_wav(out_dir / "user.wav", np.frombuffer(bytes(clock.user), np.int16))
            audio.write_wav(out_dir / "agent.wav", np.frombuffer(bytes(clock.agent), np.int16))
        except OSError as e:
            raise UserError(f"--out {out_dir}: cannot write {e.filename}: {e.strerror}") from None


def caller_logging(plan: Any, command: str) -> None:
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
    sc, out_dir = conversation_input(scenario, out, registry, "call")

    import asyncio

    from handler.room import caller

    target = caller.Target(
        url=settings.secret("LIVEKIT_URL") or "",
        api_key=settings.secret("LIVEKIT_API_KEY") or "",
        api_secret=settings.secret("LIVEKIT_API_SECRET") or "",
        agent_name=settings.get("worker.agent_name"),
        room=room or "",
    )
    caller_logging(plan, "call")
    try:
        caller.check_url(target.url)
        report, clock, failure = asyncio.run(
            caller.call(settings, registry, sc, target, progress, agent_timeout=agent_timeout)
        )
    except caller.CallError as e:
        print(config.redact(f"voice-handler: {e}", settings.secret_values()), file=sys.stderr)
        raise typer.Exit(e.exit_code) from None
    write_report(report, clock, as_json, out_dir, settings.secret_values())
    if failure is not None:
        print(config.redact(f"voice-handler: {failure}", settings.secret_values()), file=sys.stderr)
        raise typer.Exit(failure.exit_code)
