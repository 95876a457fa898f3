"""The metrics plugin's turn lines and summary, as a production session writes them, and its
Prometheus series."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from handler.logs import analyze
from handler.registry import load_checked
from handler.sim import scenario, simulate


def ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


@pytest.mark.realtime
def test_a_production_session_logs_one_line_per_turn_and_a_summary_with_the_report_numbers(cli) -> None:
    out = cli("simulate", "noisy", "--env", "production", "--offline", "--json", "-v")
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    logs = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    # a loaded machine may add livekit's warnings (e.g. slow VAD inference); never an error
    assert not [entry for entry in logs if entry["level"] in ("ERROR", "CRITICAL")], logs
    ours = [entry for entry in logs if entry["logger"] == "handler.metrics"]
    assert [entry["msg"] for entry in ours] == ["turn"] * len(report["turns"]) + ["session summary"]
    assert all(entry["session"] == "sim-noisy" for entry in ours)
    # the lines and the report are written from the same records: the same numbers
    for line, turn in zip(ours, report["turns"], strict=False):
        assert line["ttfa_ms"] == ms(turn["ttfa"])
        assert line["eou_ms"] == ms(turn["end_of_turn_delay"])
        assert line["transcription_ms"] == ms(turn["transcription_delay"])
        assert line["llm_ttft_ms"] == ms(turn["llm_ttft"])
        assert line["llm_ttfs_ms"] == ms(turn["llm_ttfs"])
        assert line["tts_ttfb_ms"] == ms(turn["tts_ttfb"])
        assert line["interrupted"] == turn["interrupted"]
        assert line["false_interruptions"] == turn["false_interruptions"]
        assert line["answered"] is True
        assert line["ttfa_ms"] >= line["eou_ms"]  # the turn had to end before the agent spoke
        assert (line["retries"], line["errors"]) == (0, 0)
    summary, s = ours[-1], report["summary"]
    assert summary["turns"] == summary["answered"] == len(report["turns"]) == 2
    assert summary["ttfa_p50_ms"] == ms(s["ttfa_p50"]) and summary["ttfa_p95_ms"] == ms(s["ttfa_p95"])
    assert summary["false_interruptions"] == s["false_interruptions"] == 1
    assert summary["false_interruptions_per_min"] == s["false_interruptions_per_min"] > 0
    assert summary["llm_tokens"] > 0 and summary["tts_characters"] > 0
    # a regression guard only; measurements/log_volume.py measures the real figure (docs/measurements)
    assert len(ours) / (s["duration_s"] / 60) < 40
    # and `logs analyze` reads the same numbers back from the log
    analyzed = analyze(["-"], stdin=io.BytesIO(out.stderr.encode()))
    assert analyzed.turns == 2 and analyzed.session_summaries == 1
    assert analyzed.ttfa.percentile(50) == summary["ttfa_p50_ms"]
    assert analyzed.ttfa.percentile(95) == summary["ttfa_p95_ms"]
    assert analyzed.false_per_minute == s["false_interruptions_per_min"]


@pytest.mark.realtime
async def test_prometheus_series_take_each_turns_numbers(tmp_path: Path) -> None:
    # in-process, so the default registry is the one the plugin observes into
    sc = tmp_path / "one.toml"
    sc.write_text('[[turns]]\nsay = "what is the weather like today"\n')
    names = {
        "turns": ("voice_handler_turns_total", {}),
        "ttfa_n": ("voice_handler_time_to_first_audio_seconds_count", {}),
        "ttfa_sum": ("voice_handler_time_to_first_audio_seconds_sum", {}),
        **{
            f"{stage}_sum": ("voice_handler_stage_seconds_sum", {"stage": stage})
            for stage in ("eou", "transcription", "llm_ttft", "tts_ttfb")
        },
    }

    def sample() -> dict[str, float]:
        return {k: REGISTRY.get_sample_value(name, labels) or 0.0 for k, (name, labels) in names.items()}

    before = sample()
    settings, registry = load_checked("dev")
    report, _ = await simulate(settings, registry, scenario.load(sc))
    delta = {k: v - before[k] for k, v in sample().items()}

    (turn,) = report.turns
    assert delta["turns"] == delta["ttfa_n"] == 1
    assert delta["ttfa_sum"] == pytest.approx(turn.ttfa)
    assert delta["eou_sum"] == pytest.approx(turn.end_of_turn_delay)
    assert delta["transcription_sum"] == pytest.approx(turn.transcription_delay)
    assert delta["llm_ttft_sum"] == pytest.approx(turn.llm_ttft)
    assert delta["tts_ttfb_sum"] == pytest.approx(turn.tts_ttfb)


# ------------------------------------------------------------------------------ the metrics directory


JOB = """
import sys
from prometheus_client import Gauge
import handler_plugins.metrics as m
from handler.pipeline.turns import TurnRecord

running = Gauge("test_running_jobs", "jobs running", multiprocess_mode="livesum")
every = Gauge("test_job_memory", "per process", multiprocess_mode="all")
running.inc()
every.set(100)
for n in range(1, 4):
    m.turn_completed(TurnRecord(n=n, ttfa=0.8, llm_ttft=0.3, interrupted=n == 2), {})
print("in a call", flush=True)
sys.stdin.read()  # alive until the test lets it go
"""


def test_the_metrics_directory_stays_bounded_over_many_job_processes_and_totals_stay_right(
    tmp_path: Path,
) -> None:
    """Each job process leaves its sample files; folded as they die, the directory holds the live
    processes' files and one archive per type, however many calls went by, and /metrics still
    counts every turn of every call (issue 23, finding 7)."""
    import os
    import subprocess
    import sys

    from prometheus_client import CollectorRegistry, generate_latest, multiprocess
    from prometheus_client.parser import text_string_to_metric_families

    from handler.observe import metrics_files

    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    calls, at_once, most_files = 40, 4, 0

    def scrape() -> dict[str, float]:
        registry = CollectorRegistry()
        metrics_files._compacting_collector()(registry, path=str(directory))
        text = generate_latest(registry).decode()
        return {
            s.name + str(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }

    def settle(jobs: list[subprocess.Popen[str]]) -> None:
        for job in jobs:
            job.communicate("", timeout=60)  # the call ends: the process exits
            assert job.returncode == 0

    for _ in range(calls // at_once):
        jobs = [
            subprocess.Popen(
                [sys.executable, "-c", JOB], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True
            )
            for _ in range(at_once)
        ]
        for job in jobs:
            assert job.stdout is not None and job.stdout.readline() == "in a call\n"
        live = scrape()  # mid-call: the running processes' gauges count
        assert live["test_running_jobs[]"] == at_once
        settle(jobs)
        metrics_files.compact(directory)  # what the worker's thread and each scrape do
        most_files = max(most_files, len(list(directory.glob("*.db"))))

    totals = scrape()
    assert totals["voice_handler_turns_total[]"] == 3 * calls
    assert totals["voice_handler_interruptions_total[]"] == calls
    assert totals["voice_handler_time_to_first_audio_seconds_count[]"] == 3 * calls
    assert abs(totals["voice_handler_time_to_first_audio_seconds_sum[]"] - 0.8 * 3 * calls) < 1e-6
    assert totals["voice_handler_time_to_first_audio_seconds_bucket[('le', '1.0')]"] == 3 * calls
    assert totals["voice_handler_stage_seconds_count[('stage', 'llm_ttft')]"] == 3 * calls
    # the dead processes' gauges are gone: no call runs, and no per-process series of a dead pid
    assert totals.get("test_running_jobs[]", 0) == 0
    assert not [k for k in totals if k.startswith("test_job_memory")]
    # bounded: one archive per summed type, whatever the number of calls
    names = sorted(f.name for f in directory.glob("*.db"))
    assert names == ["counter_archive.db", "histogram_archive.db"], names
    assert most_files == 2
    # the same numbers as prometheus_client's own collector reads from the folded directory
    plain = CollectorRegistry()
    multiprocess.MultiProcessCollector(plain, path=str(directory))
    assert b"voice_handler_turns_total 120.0" in generate_latest(plain)


def test_a_dead_jobs_files_are_folded_when_its_pid_belongs_to_a_newer_process(tmp_path: Path) -> None:
    """Linux hands a dead process's pid (or a thread id, from the same numbers) to a new one: the
    500-call run wrapped pid_max (32768) and the directory grew by the files of dead jobs whose
    numbers were alive again. Files last written before their pid's holder started are folded;
    the holder's own files stay."""
    import os
    import subprocess
    import sys

    from prometheus_client.mmap_dict import MmapedDict

    from handler.observe import metrics_files

    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        old = tmp_path / f"counter_{holder.pid}.db"  # a dead job's, written an hour before
        values = MmapedDict(str(old))
        values.write_value('["voice_handler_turns_total", "voice_handler_turns_total", {}, ""]', 3.0, 0.0)
        values.close()
        hour_ago = time.time() - 3600
        os.utime(old, (hour_ago, hour_ago))
        assert metrics_files.compact(tmp_path) == 1
        assert not old.exists()
        archived = MmapedDict.read_all_values_from_file(str(tmp_path / "counter_archive.db"))
        assert [value for _, value, _, _ in archived] == [3.0]

        own = tmp_path / f"histogram_{holder.pid}.db"  # the holder's, written since it started
        MmapedDict(str(own)).close()
        assert metrics_files.compact(tmp_path) == 0
        assert own.exists()
    finally:
        holder.communicate(b"", timeout=30)


def test_while_the_worker_runs_a_thread_folds_dead_processes_files(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    from prometheus_client import multiprocess

    from handler.observe import metrics_files

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", JOB], input="", env=env, text=True, check=True, capture_output=True)
    assert len(list(tmp_path.glob("*_[0-9]*.db"))) == 4  # the dead process's own files
    with metrics_files.bounded(str(tmp_path), interval=0.1):
        assert getattr(multiprocess.MultiProcessCollector, "_compacts", False)  # what /metrics builds
        deadline = time.monotonic() + 30
        while list(tmp_path.glob("*_[0-9]*.db")) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not getattr(multiprocess.MultiProcessCollector, "_compacts", False)
    assert sorted(f.name for f in tmp_path.glob("*.db")) == ["counter_archive.db", "histogram_archive.db"]
