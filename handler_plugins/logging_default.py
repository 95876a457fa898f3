"""Logging policy `default`: the guide's quiet levels, text or JSON lines, ids on every line, and
redaction of every known secret value from every record."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from handler.api import Register, Runtime, current_ids, hookimpl

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
REDACTED = "***"
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "fields"}


@hookimpl(trylast=True)
def register_providers(register: Register):
    register("logging", "default", configure)


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = dict(getattr(record, "fields", None) or {})
    # livekit passes context as `extra={...}`: keep those too, they are the useful part
    for k, v in record.__dict__.items():
        if k not in _STANDARD and not k.startswith("_"):
            out.setdefault(k, v)
    for k, v in current_ids().items():
        out.setdefault(k, v)
    return out


def _text_value(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".")
    s = str(v)
    return json.dumps(s) if (" " in s or not s) else s


class TextFormatter(logging.Formatter):
    """`<ISO time> <LEVEL> <logger> <message> key=value ...`: greppable and parseable."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name, record.getMessage()]
        parts += [f"{k}={_text_value(v)}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, msg, then the record's fields and ids."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in _fields(record).items():
            doc.setdefault(k, v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class RedactingHandler(logging.StreamHandler):
    """Replaces secret values in the formatted line, whatever put them there."""

    def __init__(self, stream: Any, secrets: list[str]):
        super().__init__(stream)
        # longest first, so a secret containing another is replaced whole
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for s in self.secrets:
            line = line.replace(s, REDACTED)
        return line


def configure(options: Mapping[str, Any], runtime: Runtime) -> None:
    level = str(options["level"]).upper()
    root = logging.getLogger()
    # In a livekit job process the root handler forwards records to the worker process, which
    # formats and redacts them with our handler: keep it, set only the levels.
    if not any(type(h).__name__ == "LogQueueHandler" for h in root.handlers):
        for h in list(root.handlers):
            root.removeHandler(h)
        handler = RedactingHandler(sys.stderr, runtime.settings.secret_values())
        handler.setFormatter(JsonFormatter() if options["format"] == "json" else TextFormatter())
        root.addHandler(handler)
    root.setLevel(level)
    for name, quiet in QUIET_LEVELS.items():
        logging.getLogger(name).setLevel(
            logging.DEBUG if level == "DEBUG" else max(quiet, logging.getLevelName(level))
        )
    logging.captureWarnings(True)
