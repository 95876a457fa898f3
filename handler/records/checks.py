"""Checks of `[records]` the schema's types cannot express; run with the configuration's validation
(`handler.config.validate`), so a bad value stops every command with one message and exit status 2.
Sink names and the sinks' own tables are the registry's business (`records.sinks` is a stage)."""

from __future__ import annotations

from typing import Any

ROOM_NAMES = ("hashed", "clear")
POSITIVE = ("queue_size", "flush_timeout", "retry_interval")
NOT_NEGATIVE = ("redact_digits", "retention_days")
DSN_VAR = "RECORDS_POSTGRES_DSN"
"""The `postgres` sink's DSN: a secret, like the API keys."""


def dsn_problem(dsn: str) -> str | None:
    """Why a PostgreSQL DSN does not parse (without repeating it: it holds a password), or None."""
    import psycopg

    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as e:
        return f"does not parse as a PostgreSQL connection string: {str(e).replace(dsn, '<the DSN>')}"
    return None


def problems(settings: Any) -> list[tuple[str, Any, str]]:
    """(key, value, message) for each `records.*` value that cannot work. A secret is reported
    by its variable's name with the value None: never shown."""
    r = settings.section("records")
    out: list[tuple[str, Any, str]] = []
    sinks = r.get("sinks")
    if isinstance(sinks, list) and not all(isinstance(s, str) for s in sinks):
        out.append(("records.sinks", sinks, 'must be a list of sink names, e.g. ["sqlite", "postgres"]'))
    if r.get("room_names") not in ROOM_NAMES:
        out.append(("records.room_names", r.get("room_names"), f"must be one of: {', '.join(ROOM_NAMES)}"))
    for key in POSITIVE:
        if isinstance(value := r.get(key), int | float) and value <= 0:
            out.append((f"records.{key}", value, "must be more than 0"))
    for key in NOT_NEGATIVE:
        if isinstance(value := r.get(key), int | float) and value < 0:
            out.append((f"records.{key}", value, "must be 0 or more"))
    if isinstance(sinks, list) and "postgres" in sinks:
        dsn = settings.secret(DSN_VAR)
        if dsn and (bad := dsn_problem(dsn)):
            out.append((DSN_VAR, None, f"{bad} (from {settings.secret_source(DSN_VAR)})"))
    return out
