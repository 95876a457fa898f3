"""What a worker says and how long it tries while livekit-server is away (handler/pipeline/reconnect.py);
the real thing against a restarted server is in tests/test_room_outages.py."""

from __future__ import annotations

import logging

from handler.pipeline import reconnect


def retry_record(error: str = "connection refused") -> logging.LogRecord:
    record = logging.LogRecord("livekit.agents", logging.WARNING, __file__, 1, "", (), None)
    record.msg = "failed to connect to livekit, retrying in 2s"
    record.error = error
    return record


def test_the_give_up_time_becomes_the_attempts_whose_waits_span_it() -> None:
    assert reconnect.attempts_within(0) == reconnect.FOREVER
    for seconds in (1, 20, 600, 3600):
        n = reconnect.attempts_within(seconds)
        waited = sum(reconnect.retry_delay(i) for i in range(n))
        assert waited >= seconds > waited - reconnect.retry_delay(n - 1)


def test_a_lost_server_is_said_once_then_once_a_minute_then_its_return() -> None:
    now = [0.0]
    report = reconnect.RetryReport(give_up=600, clock=lambda: now[0])
    shown = []
    for _ in range(30):  # 10 s apart: five minutes of attempts
        r = retry_record()
        if report.filter(r):
            shown.append(r.getMessage())
        now[0] += 10
    assert shown[0].startswith("lost the connection to livekit-server (connection refused)")
    assert "600 s" in shown[0] and "exiting 1" in shown[0]
    assert 4 <= len(shown) <= 6 and all("still unreachable" in m for m in shown[1:]), shown
    back = logging.LogRecord("livekit.agents", logging.INFO, __file__, 1, "registered worker", (), None)
    assert report.filter(back) and "again" in back.getMessage()
    again = retry_record()  # a later loss is said again
    assert report.filter(again) and again.getMessage().startswith("lost the connection")


def test_the_native_clients_reconnect_attempts_are_warnings() -> None:
    f = reconnect.RoomReconnectAttempts()
    text = "livekit::rtc_engine:990:livekit::rtc_engine - restarting connection... attempt: 2"
    attempt = logging.LogRecord("livekit", logging.ERROR, __file__, 1, text, (), None)
    other = logging.LogRecord("livekit", logging.ERROR, __file__, 1, "something else broke", (), None)
    assert f.filter(attempt) and attempt.levelname == "WARNING"
    assert f.filter(other) and other.levelname == "ERROR"
