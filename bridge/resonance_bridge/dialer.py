"""Nodes the bridge dials (RESONANCE_ENDPOINT, and its standbys): connect, run a Session until it
ends, back off, again, until the bridge stops. listener.py is the other direction; both run the same
Session. Which endpoint to dial is endpoints.py's to say."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from . import security
from .backoff import Failure, classify, pause
from .config import Config
from .connection import Connect, NodeConnection, NodeUnresponsive
from .endpoints import Endpoints
from .replay import REPLAYING
from .session import Session, Shared

if TYPE_CHECKING:
    from .bridge import Bridge

log = logging.getLogger("resonance.bridge")

# A session that lasted this long was healthy: the next connection attempt starts the backoff over.
# Shorter ones (a node that accepts and closes at once, a handshake that fails later) back off.
HEALTHY_SESSION_S = 10.0
# The WebSocket closing handshake waits at most this long for the node.
CLOSE_TIMEOUT_S = 2.0
FAILING_BACK = "failing back to the primary endpoint"


async def _connect(cfg: Config, url: str, headers: Any) -> NodeConnection:
    ws = await Connect(
        url,
        ssl=security.node_tls(cfg),
        create_connection=NodeConnection,
        compression=None,
        open_timeout=10,
        close_timeout=CLOSE_TIMEOUT_S,
        ping_interval=None,  # the session's keepalive, which knows when the bridge is deaf
        additional_headers=headers,
        # Oversized frames up to 8x are read whole, to dead-letter their payload; beyond that
        # memory matters more: the connection is closed (1009) and the event dead-lettered.
        max_size=8 * cfg.max_frame_bytes,
        max_queue=4,  # messages buffered below the relay, each up to max_size
    )
    assert isinstance(ws, NodeConnection)  # create_connection above
    return ws


def _switched(bridge: Bridge, endpoints: Endpoints, why: str | None, was: str) -> None:
    if why is None:
        return
    bridge.metrics.endpoint_switches.labels(why).inc()
    bridge.metrics.endpoint_in_use.labels(was).set(0)
    bridge.metrics.endpoint_in_use.labels(endpoints.current).set(1)
    log.warning("endpoint %s %s: dialling %s", was, why, endpoints.current)


async def dial(bridge: Bridge, shared: Shared) -> None:
    retry, cfg, endpoints = bridge.node_retry, bridge.config, bridge.endpoints
    bridge.metrics.endpoint_in_use.labels(endpoints.current).set(1)
    while not bridge.stopping.is_set():
        url = retry.hints["where"] = endpoints.current
        try:
            headers = security.node_headers(cfg)  # the token file read now: rotation needs no restart
        except OSError as exc:
            bridge.first_attempt.set()
            what = f"{security.token_variable(cfg)}={cfg.auth_token_file} cannot be read ({exc.strerror})"
            await retry.failed(exc, Failure("refused", "token", f"{what}: mount the token there"))
            continue
        if cfg.tls_insecure_skip_verify:
            log.warning("not verifying %s's certificate (RESONANCE_TLS_INSECURE_SKIP_VERIFY)", url)
        try:
            ws = await _connect(cfg, url, headers)
        except Exception as exc:  # nothing a node answers may end the bridge: a failed attempt
            bridge.first_attempt.set()
            failure = classify(exc, **retry.hints)
            moved = endpoints.failed(failure.kind == "refused")
            _switched(bridge, endpoints, moved, url)
            # The next endpoint at once (this one's backoff is no reason to wait for it), unless the
            # move is back to the primary: a whole round failed, paced as one endpoint would be.
            await retry.failed(exc, failure, wait=moved is None or not endpoints.on_standby)
            continue
        retry.succeeded(reset=False)  # the backoff starts over only after a healthy session
        endpoints.connected()
        log.info("connected to node %s", url)
        started = time.monotonic()
        bridge.session = session = Session(shared, ws, url)
        bridge.first_attempt.set()
        probing = asyncio.create_task(_probe(bridge, session, headers)) if endpoints.on_standby else None
        try:
            await session.run()
        finally:
            bridge.session = None
            if probing is not None:
                probing.cancel()
                await asyncio.gather(probing, return_exceptions=True)
        if bridge.stopping.is_set():
            return
        bridge.metrics.ws_reconnects.inc()
        if session.closed_for == REPLAYING:
            continue  # at once: the node gets the replay on the next connection
        if session.closed_for == FAILING_BACK:
            endpoints.fail_back()
            _switched(bridge, endpoints, "failback", url)
            continue
        # Black-holed (the keepalive heard nothing), not merely slow to ack: the next one.
        if isinstance(session.why, NodeUnresponsive) and endpoints.silent() is not None:
            _switched(bridge, endpoints, "silent", url)
            continue
        lasted = time.monotonic() - started
        if lasted >= HEALTHY_SESSION_S:
            retry.backoff.reset()
        else:  # a node that accepts and then closes must not get thousands of connections a second
            delay = retry.backoff.next_delay()
            log.info("session lasted %.1fs; reconnecting in %.1fs", lasted, delay)
            await pause(delay, bridge.stopping)


async def _probe(bridge: Bridge, session: Session, headers: Any) -> None:
    """While on a standby: a WebSocket handshake with the primary every few seconds, closed at once;
    once it has answered every one for RESONANCE_FAILBACK_AFTER_S, the session ends to fail back."""
    endpoints = bridge.endpoints
    while True:
        await asyncio.sleep(endpoints.probe_interval_s)
        answered = True
        try:
            probe = await _connect(bridge.config, endpoints.urls[0], headers)
            with contextlib.suppress(Exception):
                await probe.close(1000, "resonance health probe")
        except Exception as exc:
            log.debug("probe of %s: %r", endpoints.urls[0], exc)
            answered = False
        if endpoints.probed(answered, time.monotonic()):
            log.info(
                "primary endpoint %s answered for %gs: %s",
                endpoints.urls[0],
                endpoints.failback_after_s,
                FAILING_BACK,
            )
            session.replace(1001, FAILING_BACK)
            return
