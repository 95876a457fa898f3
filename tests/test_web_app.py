"""`python -m handler web` without a browser: its command line (one message, exit 2), the token it
mints (the agent's dispatch, no secret), access beyond loopback, the pinned front-end asset, and
the Calls API over a real SQLite store (paging, filters, one call, metrics)."""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from handler.fakes.livekit_server import LiveKitServer, free_port
from handler.web import assets
from handler.web.app import WebConfig, build
from handler.web.calls import CallsReader, Filters
from handler.web.tokens import Target
from handler_plugins.records_sqlite import SqliteStore
from tests.support import call_records

SECRET = "web-test-secret-0123456789abcdef0123456789"


# ------------------------------------------------------------------------------ command line


def test_without_livekit_settings_web_names_each_missing_one_and_exits_2(root: Path, cli: Any) -> None:
    done = cli("web", "--port", "0", cwd=root)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        assert f"{name}: required by `web`" in done.stderr
    assert "web --local" in done.stderr


def test_a_livekit_url_that_is_not_one_exits_2_without_showing_it(root: Path, cli: Any) -> None:
    env = {"LIVEKIT_URL": "127.0.0.1:7880-private", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": SECRET}
    done = cli("web", "--port", "0", env=env, cwd=root)
    assert done.returncode == 2, done.stderr
    assert "LIVEKIT_URL must start with ws://" in done.stderr
    assert "private" not in done.stderr and SECRET not in done.stderr + done.stdout


def test_a_port_in_use_is_one_message(root: Path, cli: Any) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"LIVEKIT_URL": "ws://127.0.0.1:9", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": SECRET}
        done = cli("web", "--port", str(port), env=env, cwd=root)
    assert done.returncode == 2, done.stderr
    assert (
        f"--port {port}: cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--host", "0.0.0.0"], "--host 0.0.0.0 listens beyond loopback: set an access token"),
        (["--host", "0.0.0.0", "--access-token", "short"], "16 characters or more"),
        (["--host", "example.org", "--access-token", "x" * 20], "expected an IP address"),
    ],
)
def test_beyond_loopback_needs_an_access_token(root: Path, cli: Any, args: list[str], says: str) -> None:
    done = cli("web", *args, cwd=root)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------------------------ the app


async def serve(cfg: WebConfig) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(build(cfg))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", cfg.port)
    await site.start()
    return runner, f"http://127.0.0.1:{cfg.port}"


@pytest.fixture
async def app_at(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start the app in this test's loop (bound to 127.0.0.1 whatever `host` the config says)."""
    runners = []

    async def start(target: Target, **more: Any) -> str:
        cfg = WebConfig(
            target=target, env="dev", host=more.pop("host", "127.0.0.1"), port=free_port(), **more
        )
        runner, url = await serve(cfg)
        runners.append(runner)
        return url

    yield start
    for r in runners:
        await r.cleanup()


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def test_the_token_carries_the_agents_dispatch_and_no_secret_reaches_the_browser(
    real_livekit: LiveKitServer, app_at: Callable[..., Any]
) -> None:
    target = Target(real_livekit.url, real_livekit.api_key, real_livekit.api_secret, "the-agent")
    url = await app_at(target)
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/api/token") as r:
            assert r.status == 200
            text = await r.text()
        pages = [await (await http.get(url + p)).text() for p in ("/", "/static/talk.js", "/calls")]
    doc = json.loads(text)
    assert doc["url"] == real_livekit.url and doc["agent_name"] == "the-agent"
    claims = jwt_claims(doc["token"])
    assert claims["roomConfig"]["agents"] == [{"agentName": "the-agent"}]
    assert claims["video"]["room"] == doc["room"] and claims["video"]["roomJoin"] is True
    assert claims["sub"] == doc["identity"]
    for body in [text, *pages]:
        assert real_livekit.api_secret not in body


async def test_a_server_that_does_not_answer_is_said_in_words(app_at: Callable[..., Any]) -> None:
    target = Target(f"ws://127.0.0.1:{free_port()}", "k", SECRET, "a")
    url = await app_at(target)
    async with aiohttp.ClientSession() as http, http.post(url + "/api/token") as r:
        assert r.status == 502
        error = (await r.json())["error"]
    assert "unreachable" in error and target.url in error and SECRET not in error


async def test_beyond_loopback_every_request_needs_the_token_and_the_footer_says_so(
    app_at: Callable[..., Any],
) -> None:
    token = "t" * 24
    url = await app_at(Target("ws://127.0.0.1:9", "k", SECRET, "a"), host="0.0.0.0", access_token=token)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # an IP's cookies
        for path in ("/", "/api/calls", "/vendor/livekit-client.umd.js"):
            async with http.get(url + path) as r:
                assert r.status == 401, path
        async with http.get(url + "/?access=wrong-token-wrong-token") as r:
            assert r.status == 401
        async with http.get(url + f"/?access={token}") as r:
            assert r.status == 200
            assert "beyond loopback: every request needs the access token" in await r.text()
        async with http.get(url + "/static/talk.js") as r:  # the cookie set above
            assert r.status == 200
    async with (
        aiohttp.ClientSession() as http,
        http.get(url + "/", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 200


async def test_on_loopback_a_request_for_another_host_name_is_refused(app_at: Callable[..., Any]) -> None:
    """A page whose DNS name rebinds to 127.0.0.1 must not get a join token."""
    url = await app_at(Target("ws://127.0.0.1:9", "k", SECRET, "a"))
    port = url.rsplit(":", 1)[1]
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/api/token", headers={"Host": f"rebound.example:{port}"}) as r:
            assert r.status == 403
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            async with http.get(url + "/", headers={"Host": host}) as r:
                assert r.status == 200, host


def test_an_asset_that_is_not_the_pinned_one_is_refused() -> None:
    good = assets.LIVEKIT_CLIENT
    if not good.path.is_file():
        pytest.skip(f"the LiveKit JS client is not cached: {assets.INSTALL_COMMAND}")
    assert good.verified() == good.path
    altered = assets.NpmFile(good.package, good.version, good.integrity, good.member, "0" * 64)
    with pytest.raises(assets.AssetError, match="is not the pinned"):
        altered.verified()
    absent = assets.NpmFile(good.package, "0.0.0-absent", good.integrity, good.member, good.sha256)
    with pytest.raises(assets.AssetError, match="python -m handler.web.assets install"):
        absent.verified()


# ------------------------------------------------------------------------------ the Calls API


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "calls.db")
    yield s
    s.close()


NOW = 1_796_000_000.0


def test_the_list_pages_newest_first_and_filters_on_the_stores_columns(store: SqliteStore) -> None:
    records = call_records.many(230, NOW, 10 * 86400, seed=3)
    call_records.fill(store, records)
    reader = CallsReader(store)
    first = reader.page(Filters(), 1, 100, now=NOW)
    assert first["total"] == 230 and first["pages"] == 3
    starts = [c["started_at"] for c in first["calls"]]
    assert starts == sorted(starts, reverse=True) and starts[0] == records[0]["started_at"]
    last = reader.page(Filters(), 3, 100, now=NOW)
    assert len(last["calls"]) == 30 and last["calls"][-1]["id"] == records[-1]["id"]
    row = first["calls"][0]
    assert row["turns"] == len(records[0]["turns"]) and row["ttfa_p50_ms"] > 0

    prod = reader.page(Filters(env="production"), 1, 200, now=NOW)
    assert prod["total"] == sum(r["env"] == "production" for r in records)
    assert {c["env"] for c in prod["calls"]} == {"production"}
    faulty = reader.page(Filters(faults=True), 1, 200, now=NOW)
    assert faulty["total"] == sum(bool(r["faults"]) for r in records) > 0
    assert all(c["fault_count"] > 0 and c["faults"] for c in faulty["calls"])
    recent = reader.page(Filters(since="24h", end_reason="caller_left"), 1, 200, now=NOW)
    expected = [
        r
        for r in records
        if r["end_reason"] == "caller_left" and r["started_at"] >= call_records.iso(NOW - 86400)
    ]
    assert recent["total"] == len(expected)
    assert set(reader.choices()["env"]) <= set(call_records.ENVS)


def test_metrics_buckets_the_window_and_counts_every_call_once(store: SqliteStore) -> None:
    records = call_records.many(300, NOW, 80000, seed=4)  # all inside the day the buckets cover
    call_records.fill(store, records)
    reader = CallsReader(store)
    doc = reader.metrics("24h", now=NOW)
    assert doc["bucket_s"] == 3600 and len(doc["points"]) == 24
    assert sum(p["calls"] for p in doc["points"]) == doc["calls"] == 300
    for p in doc["points"]:
        if p["calls"]:
            assert 0 < p["ttfa_p50_ms"] <= p["ttfa_p95_ms"]
    faults = sum(n for p in doc["points"] for n in p["faults"].values())
    assert faults == sum(n for r in records for kinds in r["faults"].values() for n in kinds.values())
    assert doc["start"] <= NOW - 80000 and NOW < doc["end"] <= NOW + 3600
    # asked again with nothing new: the same answer; a new call in the window: counted
    assert reader.metrics("24h", now=NOW + 1) is doc
    call_records.fill(store, [call_records.record(NOW - 10, random.Random(9))])
    assert reader.metrics("24h", now=NOW + 2)["calls"] == 301


async def test_the_api_answers_a_call_a_missing_call_and_a_bad_filter(
    store: SqliteStore, app_at: Callable[..., Any]
) -> None:
    records = call_records.many(5, time.time(), 3600, seed=5)
    call_records.fill(store, records)
    url = await app_at(Target("ws://127.0.0.1:9", "k", SECRET, "a"), calls=CallsReader(store))
    async with aiohttp.ClientSession() as http:
        async with http.get(url + f"/api/calls/{records[2]['id']}") as r:
            assert r.status == 200 and (await r.json())["turns"] == records[2]["turns"]
        async with http.get(url + "/api/calls/no-such-call") as r:
            assert r.status == 404
        async with http.get(url + "/api/calls?since=yesterday") as r:
            assert r.status == 400 and "since='yesterday'" in (await r.json())["error"]
        async with http.get(url + "/api/calls?page=x") as r:
            assert r.status == 400
        async with http.get(url + "/api/calls") as r:
            doc = await r.json()
            assert doc["total"] == 5 and doc["choices"]["source"] == ["start"]
        async with http.get(url + "/api/metrics?since=1h") as r:
            assert sum(p["calls"] for p in (await r.json())["points"]) == 5
