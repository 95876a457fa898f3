"""`python -m handler calls ...`: read the call records back from a store (SQLite or PostgreSQL).

The store is the first readable sink of `records.sinks` (or `--store NAME`); the configuration is
the one `ENV_FOR_DYNACONF` picks, as for every command. `--env` here filters records by the
environment the call ran in. Records are read as stored: the transcripts were redacted (and left
out, with `records.transcripts = false`) before they were written.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Read the call records: list, show, stats, export; prune old ones; migrate the schema.",
    no_args_is_help=True,
)

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

SinceOption = Annotated[
    str | None, typer.Option("--since", help="Only calls started within this long: 90s, 30m, 1h, 7d, 2w.")
]
EnvFilter = Annotated[str | None, typer.Option("--env", help="Only calls that ran in this environment.")]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store", help="The store to read: sqlite or postgres; default: the first listed in records.sinks."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


class CallsError(Exception):
    """A mistake the user can fix (exit status 2)."""


def duration(text: str, option: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m:
        raise CallsError(f"{option} {text!r}: not a duration; use a number and a unit: 90s, 30m, 1h, 7d, 2w")
    return float(m.group(1)) * UNITS[m.group(2)]


def _fail(message: str, code: int = 2) -> None:
    print(f"voice-handler: {message}", file=sys.stderr)
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """User mistakes: one message, exit 2. A store that cannot be reached: one message, exit 1."""
    from handler.config import ConfigError
    from handler.records.sinks import SinkConfigError
    from handler.registry import PluginLoadError

    try:
        yield
    except ConfigError as e:
        n = len(e.problems)
        print(f"voice-handler: {n} configuration problem{'s' if n > 1 else ''}:", file=sys.stderr)
        for line in e.lines():
            print(f"  - {line}", file=sys.stderr)
        raise typer.Exit(2) from None
    except (CallsError, SinkConfigError, PluginLoadError) as e:
        _fail(str(e))
    except StoreUnreachable as e:
        _fail(str(e), 1)


class StoreUnreachable(Exception):
    pass


def _stores(store: str | None, *, all_listed: bool = False) -> list[Any]:
    """The store(s) to read: `--store`, else the first readable sink listed (all of them with
    `all_listed`), else sqlite."""
    from handler.plan import load
    from handler.records.sinks import READABLE, Store

    plan = load()
    settings, registry = plan.settings, plan.registry
    if store is not None:
        if store not in registry.names("records"):
            raise CallsError(f"--store {store!r}: unknown; available: {', '.join(registry.names('records'))}")
        names = [store]
    else:
        listed = [n for n in registry.selected(settings, "records") if n in READABLE]
        names = (listed if all_listed else listed[:1]) or ["sqlite"]
    built = [plan.build_other("records", n) for n in names]
    out = [s for s in built if isinstance(s, Store)]
    if not out:
        raise CallsError(f"--store {store}: that sink cannot be read back; stores: {', '.join(READABLE)}")
    return out


def _read(store: Any, what: Any) -> Any:
    try:
        return what(store)
    except Exception as e:
        if _is_unreachable(e):
            raise StoreUnreachable(f"cannot read the {store!r}: {type(e).__name__}: {e}") from None
        raise


def _is_unreachable(e: BaseException) -> bool:
    import sqlite3

    names = {type(e).__name__, *(c.__name__ for c in type(e).__mro__)}
    return isinstance(e, sqlite3.OperationalError) or bool(names & {"OperationalError", "PoolTimeout"})


def _when(iso: str | None) -> str:
    return (iso or "-").replace("T", " ")[:19]


@app.command("list")
def list_calls(
    since: SinceOption = None,
    env: EnvFilter = None,
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many calls, newest first.")] = 50,
    store: StoreOption = None,
) -> None:
    """The calls, newest first: when, environment, turns, TTFA p50, how it ended, faults."""
    from handler.records.stats import fault_total, ttfa_p50

    with _errors():
        start = time.time() - duration(since, "--since") if since else None
        (s,) = _stores(store)
        records = _read(s, lambda st: st.records(since=start, env=env, limit=limit))
    if as_json:
        print(json.dumps(records, indent=2))
        return
    if not records:
        print(
            "no calls recorded"
            + (f" in the last {since}" if since else "")
            + (f" under {env}" if env else "")
        )
        return
    print(
        f"{'id':<12}  {'started (UTC)':<19}  {'env':<10}  {'source':<8}  "
        f"turns  ttfa p50  {'ended':<11}  faults"
    )
    for r in records:
        p50 = ttfa_p50(r)
        print(
            f"{r['id'][:12]:<12}  {_when(r.get('started_at')):<19}  {str(r.get('env')):<10}  "
            f"{str(r.get('source')):<8}  {len(r.get('turns') or []):>5}  "
            f"{(f'{p50} ms' if p50 is not None else '-'):>8}  {str(r.get('end_reason')):<11}  "
            f"{fault_total(r.get('faults') or {})}"
        )


@app.command()
def show(
    record_id: Annotated[
        str, typer.Argument(metavar="ID", help="A call's id, or the first characters of it.")
    ],
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """One call: the transcript interleaved with each turn's latency and faults."""
    with _errors():
        (s,) = _stores(store)
        record = _read(s, lambda st: st.record(record_id))
        if record is None:
            raise CallsError(f"no call {record_id!r} in the {s!r} (or the prefix matches more than one)")
    print(json.dumps(record, indent=2) if as_json else render(record))


def render(record: dict[str, Any]) -> str:
    from handler.records.stats import format_faults, ms

    lines = [
        f"call {record['id']}  {record.get('env')}  {record.get('source')}  "
        f"{_when(record.get('started_at'))} -> {_when(record.get('ended_at'))} UTC "
        f"({record.get('duration_s')} s)",
        f"ended: {record.get('end_reason')}"
        + (f" ({record['end_detail']})" if record.get("end_detail") else ""),
        "providers: " + ", ".join(f"{k}={v}" for k, v in (record.get("providers") or {}).items()),
    ]
    usage = record.get("usage") or {}
    lines.append(
        f"usage: LLM tokens {usage.get('llm_input_tokens', 0)} in / {usage.get('llm_output_tokens', 0)} out, "
        f"TTS {usage.get('tts_characters', 0)} characters, STT {usage.get('stt_audio_seconds', 0)} s of audio"
    )
    if faults := format_faults(record.get("faults") or {}):
        lines.append(f"faults: {faults}")
    said: dict[int, list[dict[str, Any]]] = {}
    for entry in record.get("transcript") or []:
        said.setdefault(entry.get("turn", 0), []).append(entry)
    if record.get("transcript") is None:
        lines.append("(transcripts are off: records.transcripts = false)")
    for entry in said.get(0, []):
        lines.append(f"  {entry['role']:<5} {_clock(entry.get('at'))}  {entry.get('text', '')}")
    for turn in record.get("turns") or []:
        parts = [f"turn {turn['n']}"]
        if turn.get("ttfa") is not None:
            parts.append(
                f"ttfa {ms(turn['ttfa'])} ms (end of turn {ms(turn.get('end_of_turn_delay'))} + "
                f"LLM {ms(turn.get('llm_ttft'))} + TTS {ms(turn.get('tts_ttfb'))})"
            )
        elif not turn.get("answered", True):
            parts.append("no reply")
        if turn.get("interrupted"):
            parts.append("interrupted")
        if turn.get("false_interruptions"):
            parts.append(f"false interruptions {turn['false_interruptions']}")
        if f := format_faults(turn.get("faults") or {}):
            parts.append(f"faults {f}")
        lines.append("  ".join(parts))
        for entry in said.get(turn["n"], []):
            cut = " [cut short]" if entry.get("interrupted") else ""
            lines.append(f"  {entry['role']:<5} {_clock(entry.get('at'))}  {entry.get('text', '')}{cut}")
    return "\n".join(lines)


def _clock(iso: str | None) -> str:
    return (iso or "")[11:23] or "-"


@app.command()
def stats(
    since: SinceOption = None, env: EnvFilter = None, as_json: JsonOption = False, store: StoreOption = None
) -> None:
    """The guide's key metrics over the stored calls: TTFA p50/p95, transcription delay, LLM and TTS
    time, false interruptions per minute, faults per stage, calls per hour."""
    from handler.records.stats import stats as compute

    with _errors():
        start = time.time() - duration(since, "--since") if since else None
        (s,) = _stores(store)
        records = _read(s, lambda st: st.records(since=start, env=env))
    doc = compute(records, since=start, now=time.time())
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    print(
        f"{doc['calls']} calls, {doc['turns']} turns, {doc['minutes']} min"
        + (f", {doc['calls_per_hour']} calls per hour" if doc["calls_per_hour"] is not None else "")
    )
    for t in doc["timings"].values():
        if t["turns"]:
            print(f"  {t['name']:<22} p50 {t['p50_ms']:>6} ms  p95 {t['p95_ms']:>6} ms  ({t['turns']} turns)")
    print(
        f"  interruptions {doc['interruptions']}, false interruptions {doc['false_interruptions']} "
        f"({doc['false_interruptions_per_min']}/min)"
    )
    for stage, kinds in doc["faults"].items():
        print(f"  faults {stage}: " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
    if doc["end_reasons"]:
        print("  ended: " + ", ".join(f"{k} {n}" for k, n in doc["end_reasons"].items()))


@app.command()
def export(
    fmt: Annotated[
        str, typer.Option("--format", help="jsonl (whole records) or csv (one row per call).")
    ] = "jsonl",
    since: SinceOption = None,
    env: EnvFilter = None,
    store: StoreOption = None,
) -> None:
    """Every matching record on stdout, oldest first."""
    from handler.records.stats import flat

    with _errors():
        if fmt not in ("jsonl", "csv"):
            raise CallsError(f"--format {fmt!r}: must be jsonl or csv")
        start = time.time() - duration(since, "--since") if since else None
        (s,) = _stores(store)
        records = list(reversed(_read(s, lambda st: st.records(since=start, env=env))))
    if fmt == "jsonl":
        for r in records:
            print(json.dumps(r, ensure_ascii=False))
        return
    rows = [flat(r) for r in records]
    if rows:
        out = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)


@app.command()
def prune(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delete calls started longer ago: 30d, 12h.")
    ],
    store: StoreOption = None,
) -> None:
    """Delete old calls from every store listed in records.sinks (or --store)."""
    with _errors():
        before = time.time() - duration(older_than, "--older-than")
        for s in _stores(store, all_listed=True):
            n = _read(s, lambda st: st.prune(before))
            print(f"{s!r}: {n} call{'s' if n != 1 else ''} older than {older_than} deleted")


@app.command()
def migrate(store: StoreOption = None) -> None:
    """Create or update the schema of every store listed in records.sinks (or --store); idempotent."""
    with _errors():
        for s in _stores(store, all_listed=True):
            print(f"{s!r}: {_read(s, lambda st: st.migrate())}")
