"""The analyzer's report as text for the terminal."""

from __future__ import annotations

from handler.logs.accumulate import Report


def _fmt(x: float | None, unit: str = "") -> str:
    return "n/a" if x is None else f"{x:g}{unit}"


def render_text(report: Report) -> str:
    """Human-readable report for the terminal."""
    r = report
    d = r.to_dict()
    fi, llm = d["false_interruptions"], d["slow_llm"]
    out = [
        f"files: {', '.join(r.files)}",
        f"lines: {r.lines} ({r.timed_lines} timed, {r.malformed_lines} malformed lines, "
        f"{r.bad_values} bad values)",
        f"time span: {d['first_ts'] or 'n/a'} .. {d['last_ts'] or 'n/a'} ({_fmt(d['span_minutes'], ' min')})",
        f"turns: {r.turns}, session summaries: {r.session_summaries}",
        "",
        f"false interruptions: {fi['count']} from {fi['rate_source']} "
        f"(livekit lines {fi['livekit_lines']}, turn lines {fi['turn_lines']}), "
        f"{_fmt(fi['per_minute'], '/min')} (target {_fmt(fi['target_per_minute'], '/min')})",
    ]
    for name, key in (
        ("openai-processing-ms", "openai_processing_ms"),
        ("llm_ttft_ms", "llm_ttft_ms"),
    ):
        s = llm[key]
        out.append(
            f"{name}: {s['count']} values, {s['slow']} > {_fmt(llm['threshold_ms'], ' ms')}, "
            f"p50 {_fmt(s['p50_ms'])} p95 {_fmt(s['p95_ms'])} max {_fmt(s['max_ms'])}"
        )
    t = d["ttfa_ms"]
    out += [
        f"time to first audio: {t['count']} turns, p50 {_fmt(t['p50_ms'], ' ms')} "
        f"p95 {_fmt(t['p95_ms'], ' ms')} max {_fmt(t['max_ms'], ' ms')}",
        f"_SegmentSynchronizerImpl: {r.segment_sync}",
    ]
    out += [f"  {n:6d}  {kind}" for kind, n in r.segment_sync_kinds.most_common(5)]
    out += [
        f"errors: {r.error_lines} ERROR/CRITICAL lines, {r.tracebacks} tracebacks, "
        f"{r.turn_errors} turn errors",
        f"retries: {r.retry_lines} livekit retry lines, {r.turn_retries} turn retries",
    ]
    out += [f"  {s}" for s in r.error_samples]
    faults = d["faults"]
    out.append("faults per stage:" + ("" if faults else " none"))
    out += [
        f"  {stage}: " + ", ".join(f"{n} {kind}" for kind, n in counts.items())
        for stage, counts in faults.items()
    ]
    vol = d["volume"]
    out += [
        f"log volume: {_fmt(vol['lines_per_minute'], ' lines/min')} overall, "
        f"peak {vol['peak_lines_per_minute']} in one minute",
    ]
    rows = vol["per_minute"]
    out += [f"  {row['minute']}  {row['lines']:8d}" for row in rows[:60]]
    if len(rows) > 60:
        out.append(f"  ... {len(rows) - 60} more minutes (see --json)")
    out.append("")
    findings = d["findings"]
    if not findings:
        out.append("no findings: everything within targets")
    for f in findings:
        out.append(f"! {f['finding']}\n  -> {f['advice']}")
    return "\n".join(out) + "\n"
