"""Delivery latency per direction: the histogram resonance_delivery_seconds{direction} for dashboards,
and the p50 and p99 of each heartbeat period, exact over a sample, for the heartbeat record and the
node's status.

  outbound: from the record's Kafka timestamp to the node's ack (ack mode `send`: to the write)
  inbound:  from the frame's arrival to Kafka's ack

Observed once per message on the hot path, so it costs a bisect and a few additions, with no lock
(prometheus_client's Histogram takes one per observation); the collector reads the counts at
scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator

from .promtext import head, labelled, number

# 1 ms to 60 s. Upper bounds, as Prometheus's `le`.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Samples kept per period: past it every other one is dropped and only every 2nd (4th, ...) kept,
# so the sample stays spread evenly over the period at any rate, in bounded memory.
KEEP = 2048


class Delivery:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last: past 60 s
        self.sum = 0.0
        self.samples: list[float] = []
        self.stride = 1
        self.skipped = 0

    def observe(self, seconds: float) -> None:
        self.observe_all((seconds,))

    def observe_all(self, values: Iterable[float]) -> None:
        """A run of deliveries (the acks read together): one call, the state in locals meanwhile."""
        counts, samples, total = self.counts, self.samples, 0.0
        skipped, stride = self.skipped, self.stride
        for seconds in values:
            if seconds < 0.0:  # a producer's clock ahead of ours
                seconds = 0.0
            counts[bisect_left(BUCKETS, seconds)] += 1
            total += seconds
            skipped += 1
            if skipped >= stride:
                skipped = 0
                samples.append(seconds)
                if len(samples) >= KEEP:
                    del samples[1::2]
                    stride *= 2
        self.sum += total
        self.skipped, self.stride = skipped, stride

    def period(self) -> tuple[float, float] | None:
        """(p50, p99) in seconds since the last call, or None if nothing was delivered; starts anew."""
        samples, self.samples, self.stride, self.skipped = self.samples, [], 1, 0
        if not samples:
            return None
        samples.sort()
        return _rank(samples, 0.50), _rank(samples, 0.99)


def _rank(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class DeliveryCollector:
    NAME = "resonance_delivery_seconds"
    DOC = (
        "Delivery latency: outbound from the record's Kafka timestamp to the node's ack (ack mode "
        "send: to the write), inbound from the frame's arrival to Kafka's ack"
    )

    def __init__(self, directions: dict[str, Delivery]) -> None:
        self.directions = directions

    def lines(self) -> Iterator[str]:
        yield from head(self.NAME, self.DOC, "histogram")
        for direction, delivery in self.directions.items():
            cumulative, one = 0, labelled(("direction",), (direction,))
            for bound, count in zip((*map(str, BUCKETS), "+Inf"), delivery.counts, strict=True):
                cumulative += count
                both = labelled(("direction", "le"), (direction, bound))
                yield f"{self.NAME}_bucket{both} {number(cumulative)}"
            yield f"{self.NAME}_count{one} {number(cumulative)}"
            yield f"{self.NAME}_sum{one} {number(delivery.sum)}"
