"""The call record (issue 21): its shape and privacy, the writer's queue and durable spool, the
`sqlite` and `webhook` sinks against real parts (a SQLite file, an aiohttp receiver checking the
signature), bad configuration, and `simulate` -> `calls list/show/stats` as a user runs them.
PostgreSQL: tests/test_records_postgres.py; a real room: tests/test_records_room.py."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import llm
from support.webhook_receiver import receiving

from handler import config
from handler.fakes.background import InBackground
from handler.pipeline.turns import TurnRecord, summarize
from handler.records import record as records
from handler.records import writer
from handler.records.spool import BAD_SUFFIX, Spool
from handler.registry import Registry

SECRET = "whsec-planted-0123456789abcdef"


@pytest.fixture(autouse=True)
def no_process_writer():
    """The process's writer is per test."""
    writer.close(0)
    yield
    writer.close(0)


def load(**overrides: Any) -> tuple[config.Settings, Registry]:
    settings = config.load()
    if overrides:
        settings = settings.with_overrides(overrides, "test")
    return settings, Registry.load()


def a_record(
    settings: config.Settings, registry: Registry, *, said: str = "what is the weather like", room: str = "r"
):
    turn = TurnRecord(n=1, user_text=said, reply_text="Sunny.", user_stopped_at=time.time() - 1, ttfa=0.9)
    history = [
        llm.ChatMessage(role="user", content=[said]),
        llm.ChatMessage(role="assistant", content=["It is sunny, call 555 123 4567 now"], interrupted=True),
    ]
    return records.build(
        settings=settings,
        registry=registry,
        info={"job": "AJ_1", "room": room, "source": "start"},
        started_at=time.time() - 5,
        ended_at=time.time(),
        turns=[turn],
        summary=summarize([turn], 0.1),
        history=history,
        usage=None,
        detail="every caller left the room",
        stage_down=False,
    )


# ------------------------------------------------------------------------------ the record


def test_a_record_hashes_the_room_masks_digit_runs_and_keeps_the_reply_as_heard(root: Path) -> None:
    settings, registry = load()
    doc = a_record(settings, registry, said="my card is 4111 1111 1111 1111", room="+15551234567")
    assert doc["schema"] == records.SCHEMA
    assert doc["room"].startswith("sha256:") and "5551234567" not in json.dumps(doc)
    assert doc["transcript"][0]["text"] == "my card is #### #### #### ####"
    agent = doc["transcript"][1]
    assert agent["role"] == "agent" and agent["interrupted"] is True and "### ### ####" in agent["text"]
    assert doc["end_reason"] == "caller_left"
    assert doc["providers"]["records"] == ["sqlite"]
    assert len(doc["turns"]) == 1 and doc["turns"][0]["ttfa"] == 0.9


def test_transcripts_off_keeps_timings_only_and_a_clear_room_name_is_kept(root: Path) -> None:
    settings, registry = load(**{"records.transcripts": False, "records.room_names": "clear"})
    doc = a_record(settings, registry, room="support-line")
    assert doc["transcript"] is None
    assert "weather" not in json.dumps(doc)
    assert doc["room"] == "support-line"
    assert doc["turns"][0]["ttfa"] == 0.9


# ------------------------------------------------------------------------------ sqlite


def test_sqlite_stores_a_record_once_however_often_it_is_delivered(root: Path) -> None:
    settings, registry = load()
    (store,) = writer.build_sinks(settings, registry)
    doc = a_record(settings, registry)
    store.write(doc)
    store.write(doc)
    assert store.count() == 1
    assert store.record(doc["id"][:8]) == doc
    assert store.prune(time.time() + 1) == 1
    assert store.count() == 0
    assert (root / ".voice-handler" / "calls.db").exists()


# ------------------------------------------------------------------------------ webhook


def webhook_settings(monkeypatch: pytest.MonkeyPatch, url: str, **more: Any):
    monkeypatch.setenv("RECORDS_WEBHOOK_SECRET", SECRET)
    return load(
        **{
            "records.sinks": ["webhook"],
            "records.webhook.url": url,
            "records.retry_interval": 0.5,
            "retry.max_retries": 2,
            "retry.backoff_initial": 0.05,
            "retry.jitter": 0.0,
            **more,
        }
    )


def test_a_webhook_answering_500_twice_then_200_gets_one_signed_delivery(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with InBackground(lambda: receiving(SECRET, statuses=[500, 500])) as receiver:
        settings, registry = webhook_settings(monkeypatch, receiver.url)
        out = writer.ensure(settings, registry)
        doc = a_record(settings, registry)
        out.submit(doc)
        assert writer.close(10) == {"webhook": 0}
    max_retries = settings.get("retry.max_retries")
    assert receiver.rejected == 0  # every attempt was signed right
    assert list(receiver.accepted) == [doc["id"]]
    assert receiver.accepted[doc["id"]] == doc
    assert 3 <= receiver.attempts <= max_retries + 1


def test_a_webhook_that_keeps_failing_spools_the_record_and_it_goes_when_it_is_back(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with InBackground(lambda: receiving(SECRET, statuses=[503] * 100)) as down:
        settings, registry = webhook_settings(monkeypatch, down.url)
        out = writer.ensure(settings, registry)
        doc = a_record(settings, registry)
        out.submit(doc)
        assert writer.close(10) == {"webhook": 1}
    assert down.attempts == settings.get("retry.max_retries") + 1 and not down.accepted
    spool = Spool(writer.directory(settings))
    assert spool.count("webhook") == 1
    with InBackground(lambda: receiving(SECRET)) as back:  # the next process delivers it at start
        settings, registry = webhook_settings(monkeypatch, back.url)
        writer.ensure(settings, registry)
        deadline = time.monotonic() + 10
        while not back.accepted and time.monotonic() < deadline:
            time.sleep(0.05)
        writer.close(5)
    assert list(back.accepted) == [doc["id"]] and back.duplicates == 0
    assert spool.count("webhook") == 0


# ------------------------------------------------------------------------------ queue and spool


class Held:
    """A third-party sink that takes records only once `release` is set (a sink that hangs)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.release = threading.Event()
        self.got: list[str] = []

    def write(self, record: Any) -> None:
        if not self.release.wait(30):
            raise TimeoutError("held")
        self.got.append(record["id"])

    def close(self) -> None:
        self.release.set()


def test_a_full_queue_spills_to_the_spool_without_waiting_and_nothing_is_lost_or_doubled(
    tmp_path: Path,
) -> None:
    sink = Held("held")
    out = writer.RecordWriter([sink], tmp_path, queue_size=2, retry_interval=0.2, flush_timeout=10)
    ids = [records.new_id() for _ in range(20)]
    began = time.monotonic()
    for record_id in ids:
        out.submit({"id": record_id})
    submitting = time.monotonic() - began
    assert submitting < 5, "submit waited on a sink that hangs"
    assert Spool(tmp_path).count("held") >= 20 - 3  # the queue's 2 and the one being written
    sink.release.set()
    deadline = time.monotonic() + 20
    while len(set(sink.got)) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    out.close(5)
    assert sorted(sink.got) == sorted(ids)  # each once
    assert Spool(tmp_path).count("held") == 0


def test_an_ending_process_spools_what_a_hanging_sink_has_not_taken(tmp_path: Path) -> None:
    sink = Held("held")
    out = writer.RecordWriter([sink], tmp_path, queue_size=10, retry_interval=60, flush_timeout=0.5)
    ids = [records.new_id() for _ in range(3)]
    for record_id in ids:
        out.submit({"id": record_id})
    assert out.flush() == {"held": 3}  # the one being written and the two queued
    spool = Spool(tmp_path)
    assert sorted(p.stem for p in spool.pending("held")) == sorted(ids)


def test_a_truncated_spool_file_is_named_once_and_the_others_are_delivered(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings, registry = load()
    spool = Spool(writer.directory(settings))
    docs = [a_record(settings, registry) for _ in range(3)]
    paths = [spool.put("sqlite", d) for d in docs]
    paths[1].write_bytes(paths[1].read_bytes()[:40])  # cut short, as by a crash mid-write
    with caplog.at_level(logging.ERROR, logger="handler.records"):
        out = writer.ensure(settings, registry)
        writer.close(10)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(paths[1]) in errors[0], errors
    (store,) = writer.build_sinks(settings, registry)
    assert {r["id"] for r in store.records()} == {docs[0]["id"], docs[2]["id"]}
    assert paths[1].with_name(paths[1].name + BAD_SUFFIX).exists()
    assert spool.count("sqlite") == 0
    assert out.workers[0].delivered == 2


# ------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("toml", "variables", "key"),
    [
        ('[default.records]\nsinks = ["sqlite", "nope"]\n', {}, "unknown records sink 'nope'"),
        (
            '[default.records]\nsinks = ["postgres"]\n',
            {"RECORDS_POSTGRES_DSN": "user=app password=s3cretpw host"},
            "RECORDS_POSTGRES_DSN",
        ),
        (
            '[default.records]\nsinks = ["webhook"]\n[default.records.webhook]\nurl = "ftp://example.com/x"\n',
            {"RECORDS_WEBHOOK_SECRET": SECRET},
            "records.webhook.url",
        ),
    ],
    ids=["unknown-sink", "dsn-does-not-parse", "webhook-not-http"],
)
def test_bad_records_configuration_exits_2_with_one_message(
    root: Path, cli: Any, toml: str, variables: dict[str, str], key: str
) -> None:
    (root / "settings.toml").write_text(toml)
    for command in (["config", "check"], ["calls", "list"]):
        done = cli(*command, env=variables, cwd=root)
        assert done.returncode == 2, done.stderr
        assert "1 configuration problem:" in done.stderr and key in done.stderr
        assert "Traceback" not in done.stderr
        assert "s3cretpw" not in done.stderr + done.stdout


# ------------------------------------------------------------------------------ a user's first run


@pytest.mark.realtime
def test_after_simulate_calls_list_shows_the_call_and_show_its_transcript(root: Path, cli: Any) -> None:
    done = cli("simulate", cwd=root, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = cli("calls", "list", "--json", cwd=root)
    assert listed.returncode == 0, listed.stderr
    (call,) = json.loads(listed.stdout)
    assert call["source"] == "simulate" and call["env"] == "dev" and call["end_reason"] == "caller_left"
    assert len(call["turns"]) == 4 and all(t["answered"] and t["ttfa"] for t in call["turns"])
    assert call["usage"]["llm_output_tokens"] > 0 and call["usage"]["tts_characters"] > 0
    shown = cli("calls", "show", call["id"][:10], cwd=root)
    assert shown.returncode == 0, shown.stderr
    assert "weather" in shown.stdout and "turn 4" in shown.stdout and "ttfa" in shown.stdout
    stats = json.loads(cli("calls", "stats", "--json", "--since", "1h", cwd=root).stdout)
    assert stats["calls"] == 1 and stats["turns"] == 4 and stats["timings"]["ttfa"]["p50_ms"] > 0
    lines = cli("calls", "export", "--format", "csv", cwd=root).stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith(call["id"])


def test_calls_prune_deletes_only_older_calls_and_export_writes_one_line_per_call(
    root: Path, cli: Any
) -> None:
    settings, registry = load()
    (store,) = writer.build_sinks(settings, registry)
    old, new = a_record(settings, registry), a_record(settings, registry)
    old["started_at"] = records.iso(time.time() - 40 * 86400)
    store.write(old)
    store.write(new)
    store.close()
    pruned = cli("calls", "prune", "--older-than", "30d", cwd=root)
    assert pruned.returncode == 0 and "1 call older than 30d deleted" in pruned.stdout, pruned.stderr
    lines = cli("calls", "export", "--format", "jsonl", cwd=root).stdout.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [new["id"]]
    bad = cli("calls", "prune", "--older-than", "a month", cwd=root)
    assert bad.returncode == 2 and "--older-than 'a month': not a duration" in bad.stderr
