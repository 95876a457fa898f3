"""The web app's numbers: the browser path's time to first audio next to the worker's and `call`'s
for the same scenario, the Talk page's load time, and the Calls page over 10,000 stored calls.

    PYTHONPATH=$PWD python measurements/web_ttfa.py [--scenario qa] [--calls 10000]

Needs livekit-server (python -m handler.fakes.livekit_server install), the LiveKit JS client
(python -m handler.web.assets install) and Chromium (apt-get install -y chromium chromium-driver).
Everything runs on 127.0.0.1: one livekit-server, one worker (`python -m handler start`, dev:
offline), `python -m handler web`, a headless Chromium whose microphone is the scenario's questions.

1. TTFA. The page measures from the end of the user's speech (its microphone's level) to the agent's
   first audible audio (the level of the track it plays); the worker logs livekit's TTFA for the same
   turns (its end of speech to its first audio frame sent). `python -m handler call` then calls the
   same worker with the same scenario and measures its own client-side TTFA. Printed per turn, and
   the medians: the browser path's cost over the worker's, and over `call`'s.
2. The Talk page: navigation to DOMContentLoaded and to the load event (the LiveKit client's 600 KB
   parsed), median of 5 loads.
3. The Calls page over N stored calls (made up, in the record's shape): the list API per filter and
   the page in the browser until its rows show, medians of 5; the metrics API's first answer and
   the median of 4 more (cached while no call arrives in the window).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from handler import config  # noqa: E402
from handler.fakes import livekit_server  # noqa: E402
from handler.fakes.worker_process import WorkerProcess, clean_env, room_worker_env  # noqa: E402
from handler.web import fake_mic, headless  # noqa: E402


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def worker_ttfas(stderr: str, room_prefix: str) -> dict[str, list[float]]:
    """Per room (job), the worker's turn TTFAs in order, from its turn lines."""
    out: dict[str, list[float]] = {}
    for m in re.finditer(r"turn n=(\d+) answered=1 ttfa_ms=(\d+).*? room=(\S+)", stderr):
        if m.group(3).startswith(room_prefix):
            out.setdefault(m.group(3), []).append(int(m.group(2)) / 1000)
    return out


def wait_http(url: str, proc: WorkerProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if proc.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"web app not answering:\n{proc.stderr[-2000:]}") from None
            time.sleep(0.2)


def start_web(root: Path, env: dict[str, str], name: str) -> tuple[WorkerProcess, str]:
    port = livekit_server.free_port()
    proc = WorkerProcess(
        clean_env(**{config.ENV_VAR: "dev", config.ROOT_VAR: str(root), **env}),
        root,
        ("web", "--port", str(port)),
        name=name,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/", proc)
    return proc, url


def talk_page_load(driver, url: str, n: int = 5) -> tuple[float, float]:
    dcl, load = [], []
    for _ in range(n):
        driver.get(url + "/")
        nav = driver.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "return [n.domContentLoadedEventEnd, n.loadEventEnd];"
        )
        dcl.append(nav[0] / 1000)
        load.append(nav[1] / 1000)
    return statistics.median(dcl), statistics.median(load)


def browser_call(driver, url: str, turns: int, timeout: float) -> list[float]:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    driver.find_element(By.ID, "call").click()
    deadline = time.monotonic() + timeout
    while True:
        s = driver.execute_script("return window.talkStats")
        if s["error"]:
            raise SystemExit(f"the page says: {s['error']}")
        if len(s["ttfas"]) >= turns or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    driver.find_element(By.ID, "hangup").click()
    time.sleep(1)
    return s["ttfas"][:turns]


def calls_page(root: Path, count: int, driver) -> dict[str, float]:
    from selenium.webdriver.common.by import By

    from handler_plugins.records_sqlite import SqliteStore
    from tests.support.call_records import fill, many

    store = SqliteStore(root / ".voice-handler" / "calls.db")
    fill(store, many(count, time.time(), 30 * 86400))
    store.close()
    env = {"LIVEKIT_URL": "ws://127.0.0.1:9", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s" * 32}
    proc, url = start_web(root, env, "web-calls")
    out: dict[str, float] = {}
    try:
        for name, q in [
            ("list, first page", ""),
            ("list, page 100", "?page=100"),
            ("list, env=production", "?env=production"),
            ("list, with faults", "?faults=1"),
            ("list, last 24 h, production, faults", "?since=24h&env=production&faults=1"),
            ("metrics, 24 h", "metrics?since=24h"),
            ("metrics, 30 days", "metrics?since=30d"),
        ]:
            path = f"/api/{q}" if q.startswith("metrics") else f"/api/calls{q}"
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                with urllib.request.urlopen(url + path, timeout=30) as r:
                    r.read()
                times.append(time.perf_counter() - t0)
            if q.startswith("metrics"):  # cached until a call arrives in the window: both figures
                out[f"API {name}, first"] = times[0]
                out[f"API {name}, again"] = statistics.median(times[1:])
            else:
                out[f"API {name}"] = statistics.median(times)
        shown = []
        for _ in range(5):
            t0 = time.perf_counter()
            driver.get(url + "/calls")
            while not driver.find_elements(By.CSS_SELECTOR, "tr.row"):
                time.sleep(0.01)
            shown.append(time.perf_counter() - t0)
        out["page /calls until its rows show (browser)"] = statistics.median(shown)
    finally:
        proc.terminate()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="qa")
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--gap", type=float, default=7.0, help="s of silence after each question")
    args = parser.parse_args()
    if why := headless.missing():
        print(why, file=sys.stderr)
        return 2
    binary = livekit_server.find()
    if binary is None:
        print(f"livekit-server is not installed: {livekit_server.INSTALL_COMMAND}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="web-bench-") as tmp:
        root = Path(tmp)
        wav = root / "mic.wav"
        ends = fake_mic.write(args.scenario, wav, gap=args.gap)
        turns = len(ends)
        (root / "calls").mkdir()
        with livekit_server.LiveKitServer(binary, root) as server:
            worker = WorkerProcess(
                room_worker_env(
                    root, server.env(), HANDLER_STT__LOCAL__PHRASES=fake_mic.phrases(args.scenario)
                ),
                root,
            )
            worker.wait_for_log("registered worker", 60)
            web, url = start_web(root, server.env(), "web")
            driver = headless.chromium(wav)
            try:
                dcl, load = talk_page_load(driver, url)
                page = browser_call(driver, url, turns, timeout=ends[-1] + 20)
                worker.wait_for_log("session summary", 30)
                from_page = next(iter(worker_ttfas(worker.stderr, "web-").values()), [])
                done = subprocess.run(
                    [sys.executable, "-m", "handler", "call", args.scenario, "--json"],
                    env=clean_env(**{config.ENV_VAR: "dev", config.ROOT_VAR: str(root), **server.env()}),
                    cwd=root,
                    capture_output=True,
                    text=True,
                    timeout=180,
                )
                if done.returncode != 0:
                    print(done.stderr[-2000:], file=sys.stderr)
                    return 1
                call_doc = json.loads(done.stdout)
                call = [t["ttfa"] for t in call_doc["turns"]]
                worker.wait_for_log("session summary", 30, count=2)
                rooms = worker_ttfas(worker.stderr, "")
                from_call = [v for room, v in rooms.items() if not room.startswith("web-")]
                from_call = from_call[-1] if from_call else []
                calls = calls_page(root / "calls", args.calls, driver)
            finally:
                driver.quit()
                web.terminate()
                worker.kill()
    print(f"web_ttfa: scenario {args.scenario}, dev (offline stack), one worker, loopback livekit-server")
    print()
    print(
        f"{'turn':>4} {'page':>6} {'worker':>6} {'page-w':>6}   {'call':>6} {'worker':>6} {'call-w':>6}  (ms)"
    )
    for i in range(turns):
        p = page[i] if i < len(page) else None
        wp = from_page[i] if i < len(from_page) else None
        c = call[i] if i < len(call) else None
        wc = from_call[i] if i < len(from_call) else None
        print(
            f"{i + 1:>4} {ms(p):>6} {ms(wp):>6} {ms(p - wp) if p and wp else '-':>6}   "
            f"{ms(c):>6} {ms(wc):>6} {ms(c - wc) if c and wc else '-':>6}"
        )
    pw = median([p - w for p, w in zip(page, from_page, strict=False)])
    cw = median([c - w for c, w in zip(call, from_call, strict=False) if c is not None])
    print(
        f"median TTFA: page {ms(median(page))} ms, `call` {ms(median([c for c in call if c]))} ms; "
        f"over the worker's own: page +{ms(pw)} ms, `call` +{ms(cw)} ms"
    )
    if pw is not None and cw is not None:
        print(f"the browser path's cost over `call`'s: {ms(pw - cw)} ms")
    print()
    print(f"Talk page (median of 5 loads): DOMContentLoaded {dcl * 1000:.0f} ms, load {load * 1000:.0f} ms")
    print()
    print(f"Calls over {args.calls} stored calls (SQLite; median of 5):")
    for name, seconds in calls.items():
        print(f"  {name:<42} {seconds * 1000:>6.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
