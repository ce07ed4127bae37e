"""Which endpoint a dialling bridge uses (README, "A standby endpoint"). Sans I/O: the dialer says
what happened, this says where to go.

  - the primary (RESONANCE_ENDPOINT) first; the standbys (RESONANCE_STANDBY_ENDPOINTS) in order,
    then the primary again, round and round while none answers;
  - the next one after the current one refused the bridge (an HTTP or TLS refusal: trying it again
    soon would be refused again), was unreachable RESONANCE_FAILOVER_ATTEMPTS times in a row, or
    went silent under a session (a black hole, found by the keepalive);
  - back to the primary once it has answered every probe for RESONANCE_FAILBACK_AFTER_S, a probe
    being a WebSocket handshake closed at once. The session on the standby is closed then; what it
    had unacked is delivered again on the primary, as after any reconnect.
"""

from __future__ import annotations


class Endpoints:
    def __init__(self, urls: list[str], attempts: int, failback_after_s: float) -> None:
        self.urls = urls
        self.attempts = attempts
        self.failback_after_s = failback_after_s
        self.index = 0
        self.failures = 0  # in a row, at the current one
        self.healthy_since: float | None = None  # the primary, answering probes since

    @property
    def current(self) -> str:
        return self.urls[self.index]

    @property
    def on_standby(self) -> bool:
        return self.index > 0

    @property
    def probe_interval_s(self) -> float:
        """Probes of the primary while on a standby: a few per fail-back period, 1 to 10 s apart."""
        return min(10.0, max(1.0, self.failback_after_s / 3))

    def failed(self, refused: bool) -> str | None:
        """An attempt at the current endpoint failed: the reason for moving to the next, or None."""
        self.failures += 1
        if refused:
            return self._next("refused")
        return self._next("unreachable") if self.failures >= self.attempts else None

    def silent(self) -> str | None:
        """A session ended because the endpoint stopped answering (keepalive): move on."""
        return self._next("silent")

    def connected(self) -> None:
        self.failures = 0

    def probed(self, answered: bool, now: float) -> bool:
        """A probe of the primary, while on a standby: True once it is time to fail back."""
        if not answered:
            self.healthy_since = None
            return False
        if self.healthy_since is None:
            self.healthy_since = now
        return now - self.healthy_since >= self.failback_after_s

    def fail_back(self) -> None:
        self.index, self.failures, self.healthy_since = 0, 0, None

    def _next(self, why: str) -> str | None:
        if len(self.urls) == 1:
            return None
        self.index, self.failures, self.healthy_since = (self.index + 1) % len(self.urls), 0, None
        return why
