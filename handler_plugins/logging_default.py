"""Logging policy `default`: the guide's quiet levels, text or JSON lines, ids on every line, and
redaction (handler/redaction.py) of every line at every level: every known secret value, signed
tokens (JWTs) and URL user info; fields marked as personal data (livekit's `lk.pii.*`: transcripts)
are left out unless `telemetry.capture_content` is on."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from handler.api import (
    ConcealingFilter,
    Register,
    Runtime,
    concealed,
    current_ids,
    hookimpl,
    identity_fields,
    is_personal_field,
    redact,
)

# The guide's "reduced verbose logging": noisy libraries are held at these levels whatever the
# root level is, unless the root is DEBUG (then everything shows, for debugging).
QUIET_LEVELS = {
    "livekit": logging.WARNING,
    "livekit.agents": logging.INFO,
    "openai": logging.WARNING,
    "httpx": logging.WARNING,
    "httpx2": logging.WARNING,  # what the openai SDK uses today
    "httpcore": logging.WARNING,
    "asyncio": logging.WARNING,
}
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "fields"}


@hookimpl(trylast=True)
def register_providers(register: Register):
    register("logging", "default", configure)


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _fields(record: logging.LogRecord, personal: bool, settings: Any) -> dict[str, Any]:
    out: dict[str, Any] = dict(getattr(record, "fields", None) or {})
    # livekit passes context as `extra={...}`: keep those too, they are the useful part
    for k, v in record.__dict__.items():
        if k not in _STANDARD and not k.startswith("_"):
            out.setdefault(k, v)
    if settings is not None:  # rooms and callers by their pseudonyms (redaction.room_id)
        identity_fields(out, settings)
    for k, v in current_ids().items():
        out.setdefault(k, v)
    if not personal:
        out = {k: v for k, v in out.items() if not is_personal_field(k)}
    return out


def _text_value(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".")
    s = str(v)
    return json.dumps(s) if (" " in s or not s) else s


class _Formatter(logging.Formatter):
    def __init__(self, personal: bool = False, settings: Any = None) -> None:
        super().__init__()
        self.personal = personal
        """Whether fields marked as personal data are written (content capture on)."""
        self.settings = settings
        """The settings rooms and participants are named by (`logging.identities`); None: as is."""


class TextFormatter(_Formatter):
    """`<ISO time> <LEVEL> <logger> <message> key=value ...`: greppable and parseable."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name, record.getMessage()]
        parts += [f"{k}={_text_value(v)}" for k, v in _fields(record, self.personal, self.settings).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(_Formatter):
    """One JSON object a line: ts, level, logger, msg, then the record's fields and ids."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in _fields(record, self.personal, self.settings).items():
            doc.setdefault(k, v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class RedactingHandler(logging.StreamHandler):
    """Redacts the formatted line, whatever put the secret there (a message, an argument, an
    `extra` field, a traceback): every known secret value, every token, every URL's user info."""

    def __init__(self, stream: Any, secrets: list[str]):
        super().__init__(stream)
        self.secrets = list(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact(concealed(super().format(record)), self.secrets)


def configure(options: Mapping[str, Any], runtime: Runtime) -> None:
    level = str(options["level"]).upper()
    root = logging.getLogger()
    # In a livekit job process the root handler forwards records to the worker process, which
    # formats and redacts them with our handler: keep it, set only the levels.
    if not any(type(h).__name__ == "LogQueueHandler" for h in root.handlers):
        for h in list(root.handlers):
            root.removeHandler(h)
        handler = RedactingHandler(sys.stderr, runtime.settings.secret_values())
        settings = runtime.settings
        personal = bool(settings.get("telemetry.capture_content"))
        formatter = JsonFormatter if options["format"] == "json" else TextFormatter
        handler.setFormatter(formatter(personal, settings))
        root.addHandler(handler)
    # a job process's records leave through livekit's queue handler, already formatted: room names
    # and participant identities (redaction.room_id) are concealed before that, in the process
    # that knows them
    for h in root.handlers:
        if not any(isinstance(f, ConcealingFilter) for f in h.filters):
            h.addFilter(ConcealingFilter())
    root.setLevel(level)
    for name, quiet in QUIET_LEVELS.items():
        logging.getLogger(name).setLevel(
            logging.DEBUG if level == "DEBUG" else max(quiet, logging.getLevelName(level))
        )
    logging.captureWarnings(True)
