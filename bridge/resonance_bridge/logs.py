"""Process logging: one line format, repeats of library messages held back, credentials redacted.

During a broker outage aiokafka logs the same connect and metadata errors many times a second;
an hour-long outage would bury everything else. The bridge reports the outage itself ("kafka
unreachable", readiness, metrics), so each repeating library message is shown once a minute.

Libraries log what they send: at DEBUG websockets prints every handshake header, the token among
them. Redact blanks credentials in every record, whichever logger made it and whichever handler
prints it: by pattern (auth headers, a URL's userinfo, private keys, password=...) and by value (the
secrets this process read, registered with secret()).
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers whose messages can repeat at the pace of input: the Kafka client's retries, and the
# bridge's reports of acks it cannot attribute and of dead letters (counted in metrics; a hostile
# node or topic must not turn them into a log flood).
HELD = ("aiokafka", "resonance.acks", "resonance.deadletters", "resonance.writer")


class HoldRepeats(logging.Filter):
    """Passes the first record of each message template from loggers under `prefixes`, then at
    most one per `interval` seconds, saying how many were held back in between."""

    def __init__(self, prefixes: tuple[str, ...] = HELD, interval: float = 60.0) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.interval = interval
        # (logger, template) -> (when last shown, repeats held since). The template, not the
        # formatted text: "node 1 down" and "node 2 down" are the same story.
        self.seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, str(record.msg))
        shown, held = self.seen.get(key, (float("-inf"), 0))
        if record.created - shown < self.interval:
            self.seen[key] = (shown, held + 1)
            return False
        if held:
            record.msg = f"{record.msg} [repeated {held} more times in the last {self.interval:.0f}s]"
        self.seen[key] = (record.created, 0)
        return True


REDACTED = "***"
# Headers whose value is a credential; the bridge adds its RESONANCE_AUTH_HEADER (main.run).
HEADERS = {"authorization", "proxy-authorization"}
# Keys whose value is a credential (password=..., 'sasl_plain_password': '...'); not *_FILE, a path.
KEYS = ("password", "passwd", "secret", "token")
# Secret values this process read, newest last; a few rotations are remembered, not every one.
KEEP = 16
# Shorter values would blank ordinary words; the patterns still cover them.
SHORTEST = 4
_SEP = r"""(?P<sep>['"]?[ \t]*[:=][ \t]*)"""
_COMMA = r"""|(?P<comma>['"][ \t]*,[ \t]*)(?=['"])"""  # ('name', 'value'): a header list
_QUOTED = r"""(?P<q>['"])(?:\\.|(?!(?P=q)).)*(?P=q)"""
_USERINFO = re.compile(r"""(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@'"<>]+@""")
# To its END line; a key cut short (a truncated dump), as far as its lines of base64 go (line breaks
# real or escaped, as in a bytes repr).
_PEM = re.compile(
    r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----)"
    r"(?:.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----)|(?:(?:\r?\n|(?:\\r)?\\n)[A-Za-z0-9+/=]*)*)",
    re.S,
)


def _pairs(keys: str, bare: str, sep: str = _SEP) -> re.Pattern[str]:
    """key: value, key=value, 'key': 'value' (a dict)."""
    return re.compile(rf"(?<![\w-])(?P<key>{keys})(?![\w-])(?:{sep})(?:{_QUOTED}|(?P<bare>{bare}))", re.I)


def _blank(match: re.Match[str]) -> str:
    quote = match["q"] or ""
    return f"{match['key']}{match['sep'] or match['comma']}{quote}{REDACTED}{quote}"


class Secrets:
    """What is redacted: the patterns, the header names and the registered values."""

    def __init__(self) -> None:
        self.values: tuple[str, ...] = ()  # longest first: a value inside another goes with it
        self.recent: list[str] = []
        self.headers: tuple[str, ...] = ()
        self.header = re.compile("")
        self.keyed = _pairs(rf"[\w.-]*(?:{'|'.join(KEYS)})", r"""[^\s,;'"})\]]+""")
        self.add_header(*HEADERS)

    def add_header(self, *names: str) -> None:
        self.headers = tuple(sorted({*self.headers, *(n.lower() for n in names)}, key=len, reverse=True))
        alternatives = "|".join(map(re.escape, self.headers))
        self.header = _pairs(alternatives, r"[^\r\n]+", _SEP + _COMMA)  # a bare value: the rest of the line

    def add_value(self, value: str) -> None:
        if len(value) < SHORTEST or value in self.recent:
            return
        self.recent = [*self.recent, value][-KEEP:]
        self.values = tuple(sorted(self.recent, key=len, reverse=True))

    def redact(self, text: str) -> str:
        """text with every credential blanked. Each pattern runs only where a plain substring test
        says it may match: this runs for every record."""
        for value in self.values:
            if value in text:
                text = text.replace(value, REDACTED)
        lowered = text.lower()
        if "://" in text and "@" in text:
            text = _USERINFO.sub(rf"\1{REDACTED}@", text)
        if "PRIVATE KEY" in text:
            text = _PEM.sub(rf"\1{REDACTED}\2", text)
        if any(name in lowered for name in self.headers):
            text = self.header.sub(_blank, text)
        if any(key in lowered for key in KEYS):
            text = self.keyed.sub(_blank, text)
        return text


SECRETS = Secrets()


def secret(value: str) -> str:
    """Registers a secret value the process has read (a token, a password): no log line shows it from
    now on. Returns the value."""
    SECRETS.add_value(value)
    return value


def header(name: str) -> None:
    """Registers the name of a header that carries a credential (RESONANCE_AUTH_HEADER)."""
    SECRETS.add_header(name)


class Redact(logging.Filter):
    """Blanks credentials in a record's formatted message (its args included), its exception and its
    stack: what any formatter would print. A record with nothing to blank is left as it is."""

    def __init__(self, secrets: Secrets | None = None) -> None:
        super().__init__()
        self.secrets = SECRETS if secrets is None else secrets

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # the handler would report it, printing msg and args raw
            message = f"{record.msg} (unformattable log arguments: {record.args!r})"
            record.msg, record.args = message, ()
        clean = self.secrets.redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = _formatter.formatException(record.exc_info)
        if record.exc_text:
            clean = self.secrets.redact(record.exc_text)
            if clean != record.exc_text:
                # Formatters print exc_text when there is no exc_info, rather than formatting it again.
                record.exc_text, record.exc_info = clean, None
        if record.stack_info:
            record.stack_info = self.secrets.redact(record.stack_info)
        return True


_formatter = logging.Formatter()


class _Redacting:
    """A record factory: every record passes Redact as it is made, before any logger's or handler's
    filter sees it, so handlers added later (kopf's, a library's) print it redacted too."""

    def __init__(self, make: Any, redact: Redact) -> None:
        self.make, self.redact = make, redact

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.make(*args, **kwargs)
        self.redact.filter(record)
        return record


def install() -> None:
    """Redact every log record of this process from now on (idempotent)."""
    if not isinstance(logging.getLogRecordFactory(), _Redacting):
        logging.setLogRecordFactory(_Redacting(logging.getLogRecordFactory(), Redact()))


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
# Fields every JSON line carries (the bridge sets its node and anchor once it knows them).
CONTEXT: dict[str, str] = {}


class JsonLines(logging.Formatter):
    """One JSON object per line, for log pipelines: time, level, logger, message, the process's
    context (node, anchor) and, where a line is about one direction of the relay, that direction."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **CONTEXT,
        }
        direction = getattr(record, "direction", None)
        if isinstance(direction, str):
            line["direction"] = direction
        # exc_text without exc_info: an exception Redact blanked credentials in.
        exception = record.exc_text or (record.exc_info and self.formatException(record.exc_info))
        if exception:
            line["exception"] = exception
        return json.dumps(line)


def setup(level: str, form: str = "text") -> None:
    """Process logging at `level`, as text or JSON lines; ValueError, worded for the user, for a level
    or format that is none."""
    if level.upper() not in LEVELS:
        raise ValueError(f"RESONANCE_LOG_LEVEL={level!r} is invalid: use one of {', '.join(LEVELS)}")
    if form.lower() not in FORMATS:
        raise ValueError(f"RESONANCE_LOG_FORMAT={form!r} is invalid: use one of {', '.join(FORMATS)}")
    logging.basicConfig(level=level.upper(), format=FORMAT)
    if form.lower() == "json":
        JsonLines.converter = time.gmtime
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLines())
    # aiokafka reports every retry at ERROR; WARNING-level chatter from it adds nothing.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    for handler in logging.getLogger().handlers:
        handler.addFilter(HoldRepeats())
    install()
