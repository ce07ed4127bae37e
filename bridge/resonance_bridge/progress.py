"""Whether the consumer makes progress: readiness from what it did, not from the absence of an error.

aiokafka fetches in the background and getmany() returns empty when nothing came, whether because
nothing was published or because the fetches stopped arriving (a coordinator in a fatal state, a
fetcher waiting on a broker that no longer answers). Evidence that it works: records handed over,
or a fetch response for a partition the bridge asks for (aiokafka's last_poll_timestamp). A consumer
nobody asks (the session waits for acks, or there is no session) is not expected to progress, and a
consumer with no partition (a group with more members than partitions) has nothing to fetch.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer

# A fetch call older than this means nobody is asking: the clock starts again when someone does.
ASKING_S = 1.0


class Progress:
    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.asked_at = 0.0  # the last fetch call (monotonic)
        self.progress_at = time.monotonic()  # the last evidence that the consumer works (monotonic)

    def asked(self) -> None:
        now = time.monotonic()
        if now - self.asked_at > ASKING_S:
            self.progress_at = now  # nobody asked until now: nothing was owed
        self.asked_at = now

    def made(self) -> None:
        self.progress_at = time.monotonic()

    def stalled(self, consumer: AIOKafkaConsumer) -> str | None:
        """Why the consumer is not progressing, or None."""
        now, wall = time.monotonic(), time.time()
        if now - self.asked_at > ASKING_S:
            return None
        partitions = consumer.assignment() - consumer.paused()
        if not partitions:
            return None
        newest = self.progress_at
        for tp in partitions:
            polled = consumer.last_poll_timestamp(tp)
            if polled:
                newest = max(newest, now - (wall - polled / 1000))
        idle = now - newest
        if idle <= self.deadline_s:
            return None
        return (
            f"consumer stalled: no fetch completed for {idle:.0f}s (the deadline is {self.deadline_s:.0f}s)"
        )
