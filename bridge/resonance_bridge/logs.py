"""Process logging: one line format, and repeats of library messages held back.

During a broker outage aiokafka logs the same connect and metadata errors many times a second;
an hour-long outage would bury everything else. The bridge reports the outage itself ("kafka
unreachable", readiness, metrics), so each repeating library message is shown once a minute.
"""

from __future__ import annotations

import logging

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


def setup(level: str) -> None:
    """Process logging at `level`; ValueError, worded for the user, for a level that is none."""
    if level.upper() not in LEVELS:
        raise ValueError(f"RESONANCE_LOG_LEVEL={level!r} is invalid: use one of {', '.join(LEVELS)}")
    logging.basicConfig(level=level.upper(), format=FORMAT)
    # aiokafka reports every retry at ERROR; WARNING-level chatter from it adds nothing.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    for handler in logging.getLogger().handlers:
        handler.addFilter(HoldRepeats())
