"""Nodes that dial in: the bridge serves a WebSocket endpoint (RESONANCE_LISTEN), and a node that
connects gets a Session, the same as one the bridge dialled (session.py): the same relay rules, acks,
dead letters, keepalive and watchdog. While no node is connected, records wait in Kafka.

- Who may connect: a node presents the token of RESONANCE_LISTEN_TOKEN_FILE (read at every
  handshake, so a rotated Secret needs no restart; compared in constant time) as
  `Authorization: Bearer <token>`, or as `?token=` for a browser, which cannot set headers. Anyone,
  only with RESONANCE_LISTEN_ANONYMOUS=true (warned about at start, and in a metric).
- One node connection at a time: a new authenticated one replaces the current session, whose
  unacked records go to the new connection. A half-open old connection costs the closing
  handshake's timeout, never a lockout.
- Hostile clients get bounded answers: handshakes under way are capped (past the cap a connection is
  dropped at once), each has a timeout, requests are size-limited by websockets, no compression is
  negotiated (a compressed frame is a protocol error: no inflation bomb), frames past 8x the frame
  limit close the connection, and what is not a WebSocket request gets an HTTP 400 saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import logging
import os
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from . import logs
from .connection import Gate, IncomingConnection
from .session import Session, Shared

if TYPE_CHECKING:
    from .bridge import Bridge

log = logging.getLogger("resonance.bridge")
CLOSE_TIMEOUT_S = 2.0
RELOAD_EVERY_S = 10.0  # a rotated certificate Secret shows up within this (plus the kubelet's sync)
ACCEPT_BACKLOG = 16  # connections accepted per turn of the loop (_serve)


class ListenUnavailable(Exception):
    """The listen address cannot be bound: one line for the user (main.py)."""


def address(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def server_tls(cert: str, key: str, client_ca: str) -> ssl.SSLContext | None:
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca:  # mutual TLS: a node without a certificate from this CA fails the TLS handshake
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class Listener:
    def __init__(self, bridge: Bridge, shared: Shared) -> None:
        self.bridge, self.shared, self.config = bridge, shared, bridge.config
        self.gate = Gate(self.config.listen_max_pending, bridge.metrics.handshakes.labels("busy").inc)
        self.lock = asyncio.Lock()  # one session at a time: the next starts once the last rewound
        self.latest: ServerConnection | None = None
        cfg = self.config
        self.tls = server_tls(cfg.listen_tls_cert_file, cfg.listen_tls_key_file, cfg.listen_client_ca_file)
        self.port = 0  # bound, once serving

    # --- the handshake ------------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        cfg = self.config
        if cfg.listen_anonymous and not cfg.listen_token_file:
            return True
        token = Path(cfg.listen_token_file).read_text().strip()
        logs.secret(token)  # websockets logs request headers at DEBUG
        given = request.headers.get("Authorization", "")
        given = given[7:].strip() if given[:7].lower() == "bearer " else ""
        if not given:
            given = (parse_qs(urlsplit(request.path).query).get("token") or [""])[0]
            logs.secret(given)
        return bool(token) and hmac.compare_digest(given.encode(), token.encode())

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        assert isinstance(ws, IncomingConnection)
        ws.handshook()
        metrics, path = self.bridge.metrics, urlsplit(request.path).path
        if path != self.config.listen_path:
            metrics.handshakes.labels("not_found").inc()
            wanted = self.config.listen_path
            return ws.respond(http.HTTPStatus.NOT_FOUND, f"no node is served at {path}: use {wanted}\n")
        try:
            authorized = self._authorized(request)
        except OSError as exc:
            metrics.handshakes.labels("error").inc()
            log.error(
                "RESONANCE_LISTEN_TOKEN_FILE=%s cannot be read (%s): mount the token there",
                self.config.listen_token_file,
                exc.strerror,
            )
            return ws.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "the bridge cannot read its token\n")
        if not authorized:
            metrics.handshakes.labels("unauthorized").inc()
            why = "present this node's token: Authorization: Bearer <token>\n"
            response = ws.respond(http.HTTPStatus.UNAUTHORIZED, why)
            response.headers["WWW-Authenticate"] = 'Bearer realm="resonance"'
            return response
        return None

    # --- a node connected -------------------------------------------------------------------------

    async def handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, IncomingConnection)
        self.bridge.metrics.handshakes.labels("accepted").inc()
        peer = "{}:{}".format(*ws.remote_address[:2]) if ws.remote_address else "?"
        self.latest, current = ws, self.bridge.session
        if current is not None:
            self.bridge.metrics.replacements.inc()
            log.info("a node connected from %s: it replaces the session with %s", peer, current.peer)
            current.replace()
        async with self.lock:
            if ws is not self.latest or self.shared.stopping.is_set():
                await ws.close(4000, "replaced by a newer connection")
                return
            log.info("node connected from %s", peer)
            session = Session(self.shared, ws, f"the node at {peer}")
            self.bridge.session, self.bridge.client = session, (peer, time.time())
            self.bridge.metrics.client.labels(peer).set(time.time())
            self.bridge.first_attempt.set()
            try:
                await session.run()
            finally:
                self.bridge.session, self.bridge.client = None, None
                self.bridge.metrics.client.remove(peer)

    # --- the server ---------------------------------------------------------------------------------

    async def run(self) -> None:
        cfg, metrics = self.config, self.bridge.metrics
        host, port = address(cfg.listen)
        # A browser sends its Origin; a node that is not a browser sends none, and is let in.
        allowed = [o.strip() for o in cfg.listen_allowed_origins.split(",") if o.strip()]
        origins: Any = [None, *allowed] if allowed else None
        if not log.isEnabledFor(logging.DEBUG):  # a line per connection: a flood would flood the log
            logging.getLogger("websockets.server").setLevel(logging.WARNING)
        if cfg.listen_anonymous and not cfg.listen_token_file:
            log.warning("any node may connect to %s (RESONANCE_LISTEN_ANONYMOUS): no token asked", cfg.peer)
        metrics.anonymous.set(int(cfg.listen_anonymous and not cfg.listen_token_file))
        try:
            server = await self._serve(host, port, origins)
        except OSError as exc:  # taken, or no address of this machine: the user's to change
            why = os.strerror(exc.errno) if exc.errno else str(exc)  # not asyncio's long wording
            what = f"RESONANCE_LISTEN={cfg.listen} cannot be used ({why})"
            raise ListenUnavailable(f"{what}: choose a free port, or an address of this machine") from None
        self.port = server.sockets[0].getsockname()[1]
        log.info("listening on %s (port %d)", cfg.peer, self.port)
        self.bridge.first_attempt.set()  # waiting for a node is a state: heartbeats say so
        reload = asyncio.create_task(self._reload()) if self.tls is not None else None
        try:
            await self.shared.stopping.wait()
        finally:
            if reload is not None:
                reload.cancel()
            server.close(close_connections=False)  # no new nodes; the session drains (session.py)
            async with self.lock:
                pass
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.bridge.time_left()):
                    await server.wait_closed()

    async def _serve(self, host: str, port: int, origins: Any) -> Server:
        cfg = self.config

        class Incoming(IncomingConnection):
            gate = self.gate

        return await serve(
            self.handle,
            host,
            port,
            ssl=self.tls,
            create_connection=Incoming,
            process_request=self.process_request,
            origins=origins,
            compression=None,
            open_timeout=cfg.listen_handshake_timeout_s,
            close_timeout=CLOSE_TIMEOUT_S,
            ping_interval=None,  # the session's keepalive
            max_size=8 * cfg.max_frame_bytes,
            max_queue=4,
            # asyncio accepts up to `backlog` connections per turn of the loop: a small one leaves the
            # node's session its turns during a connect flood (the kernel refuses the excess).
            backlog=ACCEPT_BACKLOG,
        )

    async def _reload(self) -> None:
        """A rotated certificate Secret: new handshakes get the new certificate, no restart needed."""
        cfg, tls = self.config, self.tls
        assert tls is not None
        files = [Path(f) for f in (cfg.listen_tls_cert_file, cfg.listen_tls_key_file) if f]
        seen = [f.stat().st_mtime_ns for f in files]
        while True:
            await asyncio.sleep(RELOAD_EVERY_S)
            try:
                now = [f.stat().st_mtime_ns for f in files]
                if now != seen:
                    tls.load_cert_chain(cfg.listen_tls_cert_file, cfg.listen_tls_key_file)
                    seen = now
                    log.info("server certificate reloaded from %s", cfg.listen_tls_cert_file)
            except (OSError, ssl.SSLError) as exc:  # half-written during a rotation: next time
                log.warning("server certificate not reloaded: %s", exc)
