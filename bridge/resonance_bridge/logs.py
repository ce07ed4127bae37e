"""Process logging: one line format, and repeats of library messages held back.

During a broker outage aiokafka logs the same connect and metadata errors many times a second;
an hour-long outage would bury everything else. The bridge reports the outage itself ("kafka
unreachable", readiness, metrics), so each repeating library message is shown once a minute.
"""

from __future__ import annotations

import json
import logging
import time

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
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
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
