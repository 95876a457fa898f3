"""Call-record benchmark: the `postgres` sink's throughput and cost, and what records cost the
event loop of a session.

    python measurements/records.py [--records 2000] [--writers 8]

A throwaway PostgreSQL (Debian's server, `tests/support/postgres.py`) on 127.0.0.1. Three parts:

  throughput   `--writers` processes, each a real writer (`handler.records.writer`: the bounded
               queue, its thread, the pooled `postgres` sink) submitting its share of `--records`
               call records (a 4-turn record with its transcript, about 3 kB of JSON); records per
               second from the first submit to the last commit, and each process's CPU per record.
  two fleets   two writer processes started at once on an empty database: both migrate (the
               advisory lock serializes them) and write; every record stored once, no error.
  event loop   an asyncio loop with a 5 ms heartbeat, as a session's loop: its lateness while idle,
               and while a record is submitted every 20 ms to the sqlite and postgres sinks (what a
               worker's calls ending at a high rate do to it). Stalls: lateness above 100 ms
               (livekit's loop monitor warns from there).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

STALL = 0.1


def template(root: str) -> dict[str, Any]:
    """A realistic record: four turns of the qa conversation, transcript both ways."""
    from livekit.agents import llm

    from handler import config
    from handler.pipeline.turns import TurnRecord, summarize
    from handler.records import record as records
    from handler.registry import Registry

    os.environ["VOICE_HANDLER_ROOT"] = root
    settings, registry = config.load(), Registry.load()
    said = ["what is the weather like today", "what time do you open tomorrow", "where is my order", "thanks"]
    turns = [
        TurnRecord(n=i + 1, user_stopped_at=time.time(), ttfa=1.0, llm_ttft=0.3, tts_ttfb=0.1)
        for i in range(4)
    ]
    history = [
        m
        for text in said
        for m in (
            llm.ChatMessage(role="user", content=[text]),
            llm.ChatMessage(
                role="assistant", content=["We are open from nine in the morning to six in the evening."]
            ),
        )
    ]
    return records.build(
        settings=settings,
        registry=registry,
        info={"job": "AJ_bench", "room": "bench-room", "source": "start"},
        started_at=time.time() - 60,
        ended_at=time.time(),
        turns=turns,
        summary=summarize(turns, 1.0),
        history=history,
        usage=None,
        detail=None,
        stage_down=False,
    )


def _writer_process(root: str, dsn: str, n: int, start: Any, out: Any) -> None:
    os.environ["RECORDS_POSTGRES_DSN"] = dsn
    os.environ["VOICE_HANDLER_ROOT"] = root
    from handler import config
    from handler.records import record as records
    from handler.records import writer
    from handler.registry import Registry

    doc = template(root)
    settings = config.load().with_overrides(
        {"records.sinks": ["postgres"], "records.queue_size": n + 1}, "bench"
    )
    w = writer.ensure(settings, Registry.load())
    w.workers[0].sink.migrate()  # connected and migrated before the clock starts
    start.wait()
    began, cpu = time.monotonic(), time.process_time()
    for _ in range(n):
        w.submit({**doc, "id": records.new_id()})
    spooled = writer.close(600)
    out.put((time.monotonic() - began, time.process_time() - cpu, sum(spooled.values())))


def fleet(root: str, dsn: str, writers: int, total: int) -> tuple[float, list[float], int]:
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(writers + 1), ctx.Queue()
    share = total // writers
    procs = [ctx.Process(target=_writer_process, args=(root, dsn, share, start, out)) for _ in range(writers)]
    for p in procs:
        p.start()
    start.wait()
    began = time.monotonic()
    results = [out.get(timeout=900) for _ in procs]
    wall = time.monotonic() - began
    for p in procs:
        p.join(60)
    return wall, [cpu / share for _, cpu, _ in results], sum(s for _, _, s in results)


def stored(dsn: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*), count(DISTINCT id) FROM calls").fetchone()  # type: ignore[return-value]


def reset(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS calls, records_schema")


async def heartbeat(seconds: float, submit: Any = None) -> list[float]:
    """Lateness of a 5 ms heartbeat over `seconds`; `submit()` called every 20 ms meanwhile."""
    loop = asyncio.get_running_loop()
    late: list[float] = []
    end = loop.time() + seconds
    next_submit = loop.time()
    while loop.time() < end:
        due = loop.time() + 0.005
        await asyncio.sleep(0.005)
        late.append(max(0.0, loop.time() - due))
        if submit is not None and loop.time() >= next_submit:
            submit()
            next_submit += 0.02
    return late


def loop_cost(root: str, dsn: str) -> dict[str, list[float]]:
    os.environ["RECORDS_POSTGRES_DSN"] = dsn
    from handler import config
    from handler.records import record as records
    from handler.records import writer
    from handler.registry import Registry

    doc = template(root)
    settings = config.load().with_overrides({"records.sinks": ["sqlite", "postgres"]}, "bench")
    w = writer.ensure(settings, Registry.load())
    out = {"idle": asyncio.run(heartbeat(5.0))}
    out["records every 20 ms"] = asyncio.run(
        heartbeat(5.0, lambda: w.submit({**doc, "id": records.new_id()}))
    )
    writer.close(60)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--writers", type=int, default=8)
    args = parser.parse_args()
    from support.postgres import PostgresServer

    print(f"load before: {os.getloadavg()[0]:.2f} (1-min), {os.cpu_count()} cores")
    pg_dir = tempfile.mkdtemp(prefix="voice-handler-pg-bench-")
    with tempfile.TemporaryDirectory() as root, PostgresServer(Path(pg_dir)) as pg:
        size = len(__import__("json").dumps(template(root)))
        reset(pg.dsn)
        wall, cpu, spooled = fleet(root, pg.dsn, args.writers, args.records)
        rows, distinct = stored(pg.dsn)
        print(
            f"throughput: {args.writers} writer processes, {args.records} records of {size} bytes: "
            f"{rows / wall:.0f} records/s ({wall:.2f} s), CPU per record "
            f"{statistics.median(cpu) * 1e3:.2f} ms (median writer; max {max(cpu) * 1e3:.2f} ms); "
            f"stored {rows}, distinct {distinct}, spooled {spooled}"
        )
        reset(pg.dsn)
        wall, _, spooled = fleet(root, pg.dsn, 2, 400)
        rows, distinct = stored(pg.dsn)
        print(
            f"two fleets: 2 processes migrating and writing at once: stored {rows} of 400, "
            f"distinct {distinct}, "
            f"spooled {spooled}, {wall:.2f} s"
        )
        for name, late in loop_cost(root, pg.dsn).items():
            late.sort()
            print(
                f"event loop, {name}: heartbeat lateness p50 {statistics.median(late) * 1e3:.2f} ms, "
                f"p99 {late[int(len(late) * 0.99)] * 1e3:.2f} ms, max {late[-1] * 1e3:.1f} ms, "
                f"stalls > {STALL * 1e3:.0f} ms: {sum(x > STALL for x in late)}"
            )
    print(f"load after: {os.getloadavg()[0]:.2f} (1-min)")
    import shutil

    shutil.rmtree(pg_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
