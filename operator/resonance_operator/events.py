"""Pure: which Events to post, as Kubernetes' own recorders decide (client-go's EventCorrelator).

- The same Event again (object, type, reason and message) within AGGREGATE_S is not a new Event:
  the existing one gets count + 1 and a new lastTimestamp, as `kubectl get events` shows them.
- Each object has a token bucket: BURST Events, then one per REFILL_S. A flapping bridge says so
  in a few Events with counts, not in dozens of objects a minute; what is dropped is counted.
State is bounded: the oldest entries go first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from . import GROUP, KIND, VERSION

COMPONENT = "resonance-operator"  # the Events' source, as the operator's field manager is named

AGGREGATE_S = 600.0  # client-go's: an Event is folded into the one posted in the last 10 minutes
BURST, REFILL_S = 25, 300.0  # client-go's spam filter: 25 at once, then one per 5 minutes per object
MAX_TRACKED = 4096

Key = tuple[str, str, str, str, str]  # (namespace, object uid, type, reason, message)


@dataclass
class Posted:
    name: str  # the Event object's name
    count: int
    last: float  # monotonic


@dataclass
class Bucket:
    tokens: float
    at: float


class Correlator:
    def __init__(self) -> None:
        self.posted: OrderedDict[Key, Posted] = OrderedDict()
        self.buckets: OrderedDict[str, Bucket] = OrderedDict()

    def repeat(self, key: Key, now: float) -> Posted | None:
        """The Event this one repeats (its count already raised), or None for a new Event."""
        posted = self.posted.get(key)
        if posted is None or now - posted.last > AGGREGATE_S:
            return None
        posted.count += 1
        posted.last = now
        self.posted.move_to_end(key)
        return posted

    def allow(self, uid: str, now: float) -> bool:
        """Whether the object may have one more new Event now (takes a token)."""
        bucket = self.buckets.get(uid) or Bucket(float(BURST), now)
        bucket.tokens = min(float(BURST), bucket.tokens + (now - bucket.at) / REFILL_S)
        bucket.at = now
        self.buckets[uid] = bucket
        self.buckets.move_to_end(uid)
        _bound(self.buckets)
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def record(self, key: Key, name: str, now: float) -> None:
        self.posted[key] = Posted(name, 1, now)
        self.posted.move_to_end(key)
        _bound(self.posted)

    def forget(self, key: Key) -> None:
        """The Event is gone (expired, deleted): the next one is new."""
        self.posted.pop(key, None)


def _bound(table: OrderedDict[Key, Posted] | OrderedDict[str, Bucket]) -> None:
    while len(table) > MAX_TRACKED:
        table.popitem(last=False)


def event_body(
    meta: dict[str, Any], name: str, type_: str, reason: str, message: str, now: str
) -> dict[str, Any]:
    """A new Event on the node that `meta` describes."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
