"""What never leaves the process in clear: secrets (by name, by where they came from, by shape)
and personal data (room names, transcripts).

One place decides, for every output: `config show`, every configuration problem, every log line
(the logging policy's handler and filter), command reports, span attributes and call records.

- A setting is a secret by its name (`api_key`, `*_key`, `*secret*`, `*token*`, `*password*`,
  `*credentials*`, `dsn`, ...) or by its source: everything in `.secrets.toml` is a secret.
- A variable is a secret by its name (OPENAI_API_KEY, AZURE_SPEECH_KEY, PG_PASSWORD, ...).
- Whatever the name, a signed token (a JWT: LiveKit access tokens) and the user info of a URL
  (`postgresql://user:password@host`) are replaced wherever they show up.
- Personal data: log fields and span attributes marked `pii` (livekit's `lk.pii.user_transcript`)
  are dropped unless content capture is on; room names and participant identities (a SIP room's
  name and caller's identity carry their number) are replaced by a keyed hash (`room_id`,
  `participant_id`) unless the operator opts in.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from handler.nested import walk

REDACTED = "***"
MIN_SECRET_LENGTH = 4
"""Shorter values are not replaced in text: "on" or "1" would blank half of every line."""

SECRETS_FILE = ".secrets.toml"
"""Every value read from this file is a secret, whatever its key (`Settings.sources` names it)."""

JWT = re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}")
"""A signed token (LiveKit access tokens are JWTs): a bearer credential, as secret as the key
that signed it. livekit's rtc core puts a refused token in its error messages."""

URL_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^/?#@\s'\"]+)@")
"""`scheme://user:password@host`: the user info of any URL (a DSN's password, an OTLP endpoint's
credentials), replaced as a whole."""

URL_SECRET_PARAM = re.compile(
    r"([?&][^=&#\s'\"]*(?:token|key|secret|password|passwd|signature|sig|auth)[^=&#\s'\"]*=)[^&#\s'\"]+",
    re.IGNORECASE,
)
"""A URL's query parameter named like a secret (`?token=...`, `&api_key=...`, a signed URL's
`Signature=`): its value."""

SECRET_VAR = re.compile(
    r"[A-Z][A-Z0-9_]*_(API_KEY|API_SECRET|SECRET|SECRET_KEY|KEY|TOKEN|HEADERS|PASSWORD|PASSWD|"
    r"CREDENTIALS|DSN)"
)
"""Variables that are secrets by their name (GROQ_API_KEY, AZURE_SPEECH_KEY, PG_PASSWORD,
OTEL_EXPORTER_OTLP_HEADERS...): the keys installed livekit plugins read."""

_SECRET_WORDS = frozenset(
    {"key", "apikey", "secret", "secrets", "token", "password", "passwd", "passphrase", "credential",
     "credentials", "dsn", "authorization", "auth", "bearer", "cookie"}
)  # fmt: skip
"""A setting whose name has one of these words (`api_key`, `x-api-key`, `client_secret`,
`access_token`) is a secret. Words, not substrings: `max_tokens` and `keepalive_timeout` are not."""


def is_secret_var(name: str) -> bool:
    return bool(SECRET_VAR.fullmatch(name))


def is_secret_key(path: str) -> bool:
    """Whether a setting (a dotted path: `llm.openai.api_key`) holds a secret by its name. A key
    ending in `_env` names the variable that holds one (`api_key_env`, `headers_env`): not secret."""
    for part in path.lower().split("."):
        if part.endswith("_env"):
            continue
        words = set(re.split(r"[_\-\s]+", part))
        if words & _SECRET_WORDS or "secret" in part or "password" in part:
            return True
    return False


def hidden(path: str, source: str) -> bool:
    """Whether a setting's value must never be shown: a secret by its name or by its source."""
    return is_secret_key(path) or source.startswith(SECRETS_FILE)


def url_credentials(value: str) -> list[str]:
    """The user and password inside a URL (%-decoded and as written), for redaction elsewhere."""
    out: list[str] = []
    for m in URL_USERINFO.finditer(value):
        userinfo = m.group(2)
        user, _, password = userinfo.partition(":")
        out += [userinfo, password, unquote(password)]
        if not password:
            out.append(user)
    return [v for v in out if v]


def has_url_credentials(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return bool(parts.username or parts.password)


def setting_secrets(data: Mapping[str, Any], source: Any) -> list[str]:
    """Secret values held in settings: every value at a secret-named key or read from the secrets
    file (`source(path)` says where a value came from), and the credentials inside any URL."""
    out: list[str] = []
    for path, value in walk(data):
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not isinstance(v, str | int | float) or isinstance(v, bool):
                continue
            text = str(v)
            if hidden(path, source(path)):
                out.append(text)
            out += url_credentials(text)
    return out


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value, every signed token and every URL's user info replaced
    (values longest first, so none shows in part)."""
    for value in sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    text = URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    text = URL_SECRET_PARAM.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return JWT.sub(REDACTED, text)


# ------------------------------------------------------------------------------ personal data


def is_personal_field(key: str) -> bool:
    """A log field or span attribute marked as personal data (`lk.pii.user_transcript`): the same
    rule livekit's span filter applies (a `pii` segment in the dotted name)."""
    return "pii" in key.split(".")


def pseudonym(value: str, key: str | bytes = b"") -> str:
    """A stable stand-in for a personal value (a room name, a phone number): the same value maps
    to the same id, so lines and spans of one call still join; keyed (HMAC-SHA256), so with a
    secret key the short space of phone numbers cannot be hashed through to find the caller."""
    k = key.encode() if isinstance(key, str) else key
    return "h-" + hmac.new(k, value.encode(), hashlib.sha256).hexdigest()[:16]


IDENTITIES_SETTING = "logging.identities"
CLEAR = "clear"


def room_id(name: str, settings: Any) -> str:
    """How a room is named in logs, spans and records: its pseudonym, keyed with the LiveKit API
    secret (the same in every process of a deployment), unless `logging.identities = "clear"`.
    The one helper for room names everywhere; this process's log lines conceal the name from then
    on, wherever it shows up (a livekit message, an `extra` field, a traceback)."""
    return _identity(name, settings)


def participant_id(identity: str, settings: Any) -> str:
    """The same for a participant's identity (a SIP caller's is their number)."""
    return _identity(identity, settings)


def deployment_key(settings: Any) -> str:
    """The key every pseudonym of a deployment is made with: the LiveKit API secret, the same in
    every process and never shown, so a pseudonym joins a call's lines, spans and records and
    cannot be recomputed from a guessed phone number by anyone without it."""
    return settings.secret("LIVEKIT_API_SECRET") or ""


def _identity(value: str, settings: Any) -> str:
    if not value or settings.get(IDENTITIES_SETTING) == CLEAR:
        return value
    stand_in = pseudonym(value, deployment_key(settings))
    conceal(value, stand_in)
    return stand_in


IDENTITY_FIELDS = frozenset({"room", "room_name", "participant", "participant_identity", "identity"})
"""Log fields that name a room or a participant (livekit's `extra`s: "received job request"
room=..., "closing agent session" participant=...; the worker process adds the job's room to every
line a job process forwards)."""
PSEUDONYM = re.compile(r"h-[0-9a-f]{16}")
CONCEALED_KEPT = 256
"""Personal values a process remembers for its log lines, the most recent: a worker process sees
every call's room, and the oldest calls are over."""

_concealed: OrderedDict[str, str] = OrderedDict()
"""This process's personal values -> their stand-ins, for its log lines."""
_longest_first: list[str] = []


def conceal(value: str, stand_in: str) -> None:
    """From now on `value` is written as `stand_in` in this process's log lines."""
    global _longest_first
    if len(value) < MIN_SECRET_LENGTH or value == stand_in:
        return
    _concealed[value] = stand_in
    _concealed.move_to_end(value)
    while len(_concealed) > CONCEALED_KEPT:
        _concealed.popitem(last=False)
    _longest_first = sorted(_concealed, key=len, reverse=True)


def concealed(text: str) -> str:
    for value in _longest_first:
        if value in text:
            text = text.replace(value, _concealed[value])
    return text


def identity_fields(fields: dict[str, Any], settings: Any) -> dict[str, Any]:
    """`fields` with each room or participant named by its pseudonym (those already are kept)."""
    for key in IDENTITY_FIELDS & fields.keys():
        value = fields[key]
        if isinstance(value, str) and not PSEUDONYM.fullmatch(value):
            fields[key] = _identity(value, settings)
    return fields


_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class ConcealingFilter(logging.Filter):
    """Replaces this process's personal values (`conceal`) in a record before any handler formats
    or forwards it: its message, its string fields and its traceback. A job process forwards its
    records to the worker process, which never learns the job's room: the job conceals them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _concealed:
            return True
        message = record.getMessage()
        if (hidden := concealed(message)) != message:
            record.msg, record.args = hidden, None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str):
                record.__dict__[key] = concealed(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = concealed(record.exc_text)
        return True
