"""Nodes the bridge dials (RESONANCE_ENDPOINT): connect, run a Session until it ends, back off,
again, until the bridge stops. listener.py is the other direction; both run the same Session."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from . import security
from .backoff import Failure, pause
from .connection import Connect, NodeConnection
from .session import Session, Shared

if TYPE_CHECKING:
    from .bridge import Bridge

log = logging.getLogger("resonance.bridge")

# A session that lasted this long was healthy: the next connection attempt starts the backoff over.
# Shorter ones (a node that accepts and closes at once, a handshake that fails later) back off.
HEALTHY_SESSION_S = 10.0
# The WebSocket closing handshake waits at most this long for the node.
CLOSE_TIMEOUT_S = 2.0


async def dial(bridge: Bridge, shared: Shared) -> None:
    retry, cfg = bridge.node_retry, bridge.config
    while not bridge.stopping.is_set():
        try:
            headers = security.node_headers(cfg)  # the token file read now: rotation needs no restart
        except OSError as exc:
            bridge.first_attempt.set()
            what = f"{security.token_variable(cfg)}={cfg.auth_token_file} cannot be read ({exc.strerror})"
            await retry.failed(exc, Failure("refused", "token", f"{what}: mount the token there"))
            continue
        if cfg.tls_insecure_skip_verify:
            log.warning("not verifying %s's certificate (RESONANCE_TLS_INSECURE_SKIP_VERIFY)", cfg.endpoint)
        try:
            ws = await Connect(
                cfg.endpoint,
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
        except Exception as exc:  # nothing a node answers may end the bridge: a failed attempt
            bridge.first_attempt.set()
            await retry.failed(exc)
            continue
        retry.succeeded(reset=False)  # the backoff starts over only after a healthy session
        log.info("connected to node %s", cfg.endpoint)
        started = time.monotonic()
        assert isinstance(ws, NodeConnection)  # create_connection above
        bridge.session = session = Session(shared, ws, cfg.endpoint)
        bridge.first_attempt.set()
        try:
            await session.run()
        finally:
            bridge.session = None
        if bridge.stopping.is_set():
            return
        bridge.metrics.ws_reconnects.inc()
        lasted = time.monotonic() - started
        if lasted >= HEALTHY_SESSION_S:
            retry.backoff.reset()
        else:  # a node that accepts and then closes must not get thousands of connections a second
            delay = retry.backoff.next_delay()
            log.info("session lasted %.1fs; reconnecting in %.1fs", lasted, delay)
            await pause(delay, bridge.stopping)
