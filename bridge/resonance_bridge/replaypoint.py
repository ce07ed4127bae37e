"""A replay request's grammar (README, "Replay"): an RFC 3339 time, `earliest`, or `partition:offset`
pairs. Pure, for the bridge (replay.py), the operator (the node's resonance.io/replay-from annotation)
and `resonance replay` alike: each refuses the same values with the same words."""

from __future__ import annotations

import datetime
import re
import time
from dataclasses import dataclass

FORMS = "an RFC 3339 time (2026-12-01T10:00:00Z), earliest, or partition:offset pairs (0:1200,1:900)"
_OFFSETS = re.compile(r"^\d{1,9}:\d{1,19}(,\d{1,9}:\d{1,19})*$")


@dataclass(frozen=True, slots=True)
class Request:
    value: str
    at_ms: int | None = None
    earliest: bool = False
    offsets: tuple[tuple[int, int], ...] = ()


def iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def parse(value: str, now: float | None = None) -> Request:
    """The request, or ValueError saying what is wrong and what to write instead."""
    value = value.strip()
    if value == "earliest":
        return Request(value, earliest=True)
    if _OFFSETS.match(value):
        pairs = (pair.split(":") for pair in value.split(","))
        return Request(value, offsets=tuple((int(p), int(o)) for p, o in pairs))
    try:
        at = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a point to replay from: use {FORMS}") from None
    if at.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone: add one, e.g. {value}Z")
    now = time.time() if now is None else now
    if at.timestamp() > now + 1:
        raise ValueError(f"{value} is in the future (it is {iso(now)}): replay from a time that has passed")
    return Request(value, at_ms=int(at.timestamp() * 1000))
