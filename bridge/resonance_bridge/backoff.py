"""One retry policy for every loop that retries forever (connecting to the node, starting a Kafka
client, storing a record, fetching, restarting a background loop).

A failure is classified. *Unreachable* (connection refused, DNS, a timeout) may pass any moment:
retry with jittered exponential backoff. *Refused* (HTTP 401/403 on the handshake, a certificate
that fails verification, Kafka authentication or authorization) will not pass until someone changes
a setting: retry slowly, about once a minute, so the peer is not hammered, and say exactly why.
The reason is logged once per change (not per attempt), counted by code, and kept for /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from aiokafka import errors as kafka_errors
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from .connection import RedirectRefused

# Kafka's answers that mean "not with these credentials or permissions": no retry soon will help.
_KAFKA_REFUSALS = (
    kafka_errors.AuthenticationFailedError,
    kafka_errors.SaslAuthenticationFailed,
    kafka_errors.UnsupportedSaslMechanismError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
)


@dataclass(frozen=True, slots=True)
class Failure:
    kind: Literal["unreachable", "refused"]
    code: str  # a metric label: a small fixed set
    message: str  # one line for logs and /readyz: what happened and what to check


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify(
    exc: BaseException, token_hint: str = "RESONANCE_AUTH_TOKEN", where: str = "", ca_hint: str = ""
) -> Failure:
    """What a failed connection attempt (to the node or to Kafka) means for retrying it; `where` and
    the hints name what to check in the message."""
    if isinstance(exc, InvalidStatus) and exc.response.status_code in (401, 403):
        status = exc.response.status_code
        return Failure("refused", f"http_{status}", f"HTTP {status} (check {token_hint})")
    verify = next((e for e in _chain(exc) if isinstance(e, ssl.SSLCertVerificationError)), None)
    if verify is not None:
        said = verify.verify_message or str(verify)
        if "mismatch" in said:
            fix = "the certificate is for another host: connect by a name it was issued for"
        elif "expired" in said:
            fix = "the certificate has expired: renew it"
        else:
            fix = f"set {ca_hint or 'the CA file'} to the CA that signed it"
        return Failure(
            "refused", "tls", f"certificate verify failed: {said} for {where or 'the peer'}: {fix}"
        )
    handshake = next((e for e in _chain(exc) if isinstance(e, ssl.SSLError)), None)
    if handshake is not None:
        return Failure("refused", "tls", f"TLS handshake failed with {where or 'the peer'}: {handshake}")
    if isinstance(exc, _KAFKA_REFUSALS):
        return Failure(
            "refused", "auth", f"{type(exc).__name__}: {exc} (check the Kafka credentials and ACLs)"
        )
    if isinstance(exc, RedirectRefused):
        return Failure("refused", "redirect", str(exc))
    if isinstance(exc, InvalidStatus) and 300 <= exc.response.status_code < 400:
        status, location = exc.response.status_code, exc.response.headers.get("Location")
        said = f"to {location}" if location else "without a Location"
        return Failure("unreachable", "handshake", f"HTTP {status} redirect {said} cannot be followed")
    if isinstance(exc, InvalidHandshake | InvalidURI | ValueError):
        # Not a WebSocket server's answer (a redirect gone wrong, a bad status line, no Upgrade, a
        # header too large, plain HTTP on a TLS port): say what came back.
        return Failure("unreachable", "handshake", f"bad handshake: {type(exc).__name__}: {exc}")
    if isinstance(exc, ConnectionRefusedError):
        return Failure("unreachable", "connection_refused", str(exc) or "connection refused")
    if isinstance(exc, socket.gaierror):
        return Failure("unreachable", "dns", str(exc))
    if isinstance(exc, TimeoutError):
        return Failure("unreachable", "timeout", "timed out")
    return Failure("unreachable", "other", str(exc) or type(exc).__name__)


@dataclass
class Backoff:
    initial: float = 0.1
    maximum: float = 10.0
    factor: float = 2.0
    attempt: int = 0

    def next_delay(self) -> float:
        """Full jitter (AWS architecture blog): spreads reconnecting bridges so they do not stampede."""
        ceiling = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class Retry:
    """The state of one thing being retried: its backoff, its current failure, what was logged."""

    def __init__(
        self,
        what: str,
        stopping: asyncio.Event,
        log: logging.Logger,
        *,
        refused_delay: float = 60.0,
        on_failure: Callable[[Failure], None] | None = None,
        hints: dict[str, str] | None = None,
    ) -> None:
        self.hints = hints or {}  # classify()'s: where the peer is, which setting to check
        self.what = what
        self.stopping = stopping
        self.log = log
        self.refused_delay = refused_delay
        self.on_failure = on_failure
        self.backoff = Backoff()
        self.failure: Failure | None = None  # the last failure, until a success

    async def failed(self, exc: BaseException, failure: Failure | None = None, wait: bool = True) -> None:
        """Count and report the failure (logged when its reason changes), then wait before the next
        attempt: the backoff when unreachable, about refused_delay when refused; less if stopping.
        Without `wait`, the next attempt goes elsewhere (another endpoint) and may start at once."""
        failure = failure or classify(exc, **self.hints)
        if failure != self.failure:
            self.log.warning(
                "%s %s: %s; retrying %s", self.what, failure.kind, failure.message, self._pace(failure)
            )
        self.failure = failure
        if self.on_failure is not None:
            self.on_failure(failure)
        if not wait:
            return
        if failure.kind == "refused":
            delay = random.uniform(0.75 * self.refused_delay, self.refused_delay)
        else:
            delay = self.backoff.next_delay()
        await pause(delay, self.stopping)

    def succeeded(self, reset: bool = True) -> None:
        """It worked: forget the failure, and (unless told otherwise) start the backoff over."""
        if self.failure is not None:
            self.log.info("%s: ok again after %s", self.what, self.failure.message)
        self.failure = None
        if reset:
            self.backoff.reset()

    def _pace(self, failure: Failure) -> str:
        return f"every ~{self.refused_delay:.0f}s" if failure.kind == "refused" else "with backoff"


async def keep_running(name: str, loop: Callable[[], Awaitable[None]], log: logging.Logger) -> None:
    """Keep a background loop alive: a bug or an odd error in one tick must not stop heartbeats.
    Restarts back off (1 s doubling to a minute), so a loop that fails at once cannot spin."""
    backoff = Backoff(initial=1.0, maximum=60.0)
    while True:
        started = time.monotonic()
        try:
            await loop()
        except Exception:
            log.exception("%s failed; restarting it", name)
        if time.monotonic() - started > backoff.maximum:
            backoff.reset()
        await asyncio.sleep(backoff.next_delay())


async def pause(delay: float, stopping: asyncio.Event) -> None:
    """Sleep for `delay` seconds, or less if stopping is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), delay)
