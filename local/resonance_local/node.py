"""The reference node server: the integration guide's sample LexAmoris/Nexus server, done right.

It prints what it receives and acks every message in order, echoing an `id` when the message
had one. Unlike the guide's sample it does not ack the bridge's own acks and errors (that would
loop forever), it survives bad JSON, and it can send messages of its own (typed, or from a file).
Tests and the local demo talk to it, so it keeps counts of everything it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from resonance_bridge import codec
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

Printer = Callable[[str], None]


def server_tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> ssl.SSLContext | None:
    """The node server's TLS: its certificate and key; with client_ca, client certificates required."""
    if cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _print(line: str) -> None:
    print(line, flush=True)


class Node:
    """What a node does with a bridge once connected, whichever side dialled: print, ack, count."""

    def __init__(
        self,
        name: str,
        *,
        ack: bool = True,
        ack_delay: float = 0.0,
        token: str | None = None,
        token_header: str = "Authorization",
        tls: ssl.SSLContext | None = None,
        printer: Printer | None = _print,
    ) -> None:
        self.tls = tls  # the server's (and client certificates required if it says so), or the client's
        self.name = name
        self.token = token  # a server: handshakes without "Authorization: Bearer <token>" get 401
        self.token_header = token_header  # or the token as is in another header, e.g. X-API-Key
        self.ack, self.ack_delay = ack, ack_delay
        self.printer = printer
        self.received: list[dict[str, Any]] = []  # every message the bridge sent, in order
        self.replies: list[dict[str, Any]] = []  # the bridge's acks and errors for what we sent
        self.acks_sent = 0
        self.connections_seen = 0
        self.connections: set[Connection] = set()
        self.connected = asyncio.Event()  # set while at least one bridge is connected
        self.changed = asyncio.Event()  # set whenever a message arrives: callers wait without polling
        self.background: asyncio.Task[None] | None = None  # the --send-every talker

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def kill(self) -> None:
        """Die like a crashed process: no closing handshakes."""
        raise NotImplementedError

    def _say(self, line: str) -> None:
        if self.printer is not None:
            self.printer(f"[{self.name}] {line}")

    def drop(self) -> None:
        """Drop every connection as a restarting node would (a server keeps serving new ones, a
        client dials again)."""
        for ws in list(self.connections):
            ws.transport.abort()
            self.connections.discard(ws)  # now: a send to it would vanish, not fail
        self.connected.clear()

    async def send(self, frame: str | bytes, text: bool | None = None) -> int:
        """Send one frame to every connected bridge (bytes with text=True: a text frame of those
        bytes, valid UTF-8 or not); returns how many got it."""
        sent = 0
        for ws in list(self.connections):
            with contextlib.suppress(ConnectionClosed):
                await ws.send(frame, text=text)
                sent += 1
        return sent

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until predicate() holds, re-checking whenever a message arrives."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def _session(self, ws: Connection, where: str) -> None:
        self.connections.add(ws)
        self.connections_seen += 1
        self.connected.set()
        self._say(f"bridge connected {where}")
        try:
            async for frame in ws:
                await self._on_frame(ws, frame)
        except ConnectionClosed:
            pass
        finally:
            self.connections.discard(ws)
            if not self.connections:
                self.connected.clear()
            self._say("bridge disconnected")

    async def _on_frame(self, ws: Connection, frame: str | bytes) -> None:
        try:
            message = json.loads(frame)
            mtype = message["type"]
        except (ValueError, TypeError, KeyError):
            self._say(f"ignored a frame that is not a Resonance message: {frame!r:.200}")
            return
        if mtype in codec.REPLY_TYPES:  # the bridge's answers to what this node sent
            self.replies.append(message)
            self._say(
                f"<- {mtype} {json.dumps(message)}"
                if mtype == "error"
                else f"<- ack for {message.get('original_type')}"
            )
        else:
            self.received.append(message)
            self._say(f"<- {mtype} {json.dumps(message)[:200]}")
            if self.ack:
                if self.ack_delay:
                    await asyncio.sleep(self.ack_delay)
                reply = codec.ack(mtype, message.get("id"))  # the id echoed as sent
                self.acks_sent += 1  # counted before sending: a count never lags what the bridge saw
                await ws.send(json.dumps(reply))
        self.changed.set()


class NodeServer(Node):
    """A node the bridge dials (the guide's LexAmoris/Nexus server)."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 8766, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.host, self.port = host, port
        self.refused = 0  # handshakes answered 401
        self.last_authorization: str | None = None  # of the latest connection's handshake
        self.server: Server | None = None

    async def start(self) -> None:
        self.server = await serve(
            self._handle,
            self.host,
            self.port,
            compression=None,
            max_size=None,
            process_request=self._authorize,
            ssl=self.tls,
        )
        self.port = int(next(iter(self.server.sockets)).getsockname()[1])

    def _authorize(self, ws: ServerConnection, request: Request) -> Response | None:
        bearer = self.token_header.lower() == "authorization"
        expected = f"Bearer {self.token}" if bearer else self.token
        if self.token is None or request.headers.get(self.token_header) == expected:
            return None
        self.refused += 1
        self._say("refused a bridge: wrong or missing token (HTTP 401)")
        return ws.respond(HTTPStatus.UNAUTHORIZED, "a valid bearer token is required\n")

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def kill(self) -> None:
        """Die like a crashed process: drop every TCP connection without a closing handshake."""
        for ws in list(self.connections):
            ws.transport.abort()
        await self.close()

    async def _handle(self, ws: ServerConnection) -> None:
        self.last_authorization = ws.request.headers.get("Authorization") if ws.request else None
        await self._session(ws, f"from {ws.remote_address}")


async def _send_lines(node: Node, lines: Any, label: str) -> None:
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        await node.connected.wait()  # wait for a bridge rather than dropping what the user typed
        await node.send(line)
        node._say(f"-> sent {label}: {line[:200]}")


def _in_background() -> bool:
    """Whether stdin is a terminal whose foreground is another process group (`node serve &`):
    reading it would stop this process (SIGTTIN) until brought to the foreground."""
    try:
        return sys.stdin.isatty() and os.tcgetpgrp(sys.stdin.fileno()) != os.getpgrp()
    except (OSError, ValueError):
        return False


def _stdin_lines() -> asyncio.Queue[str | None]:
    """Lines typed on stdin, read by a daemon thread so that exiting never waits on a blocked read.
    SIGTTIN is ignored: a node sent to the background later gets an error reading, not stopped."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    with contextlib.suppress(ValueError):  # not the main thread (tests): nothing to ignore there
        signal.signal(signal.SIGTTIN, signal.SIG_IGN)

    def read() -> None:
        with contextlib.suppress(OSError):
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return queue


async def _send_every(node: Node, interval: float) -> None:
    """A node that talks back on its own: its state, every `interval` seconds (for demos)."""
    seq = 0
    while True:
        await asyncio.sleep(interval)
        body = {
            "type": "state_update",
            "timestamp": codec.now_iso(),
            "anchor": node.name.upper(),
            "data": {"status": "operational", "node": node.name, "seq": seq},
        }
        if await node.send(json.dumps(body)):
            node._say(f"-> sent state_update #{seq}")
            seq += 1


async def serve_forever(
    name: str,
    host: str,
    port: int,
    ack: bool,
    quiet: bool,
    send_lines: list[str],
    stdin: bool,
    send_every: float = 0.0,
    token: str | None = None,
    tls: ssl.SSLContext | None = None,
    token_header: str = "Authorization",
) -> None:
    printer = None if quiet else _print
    node = NodeServer(
        name, host, port, ack=ack, token=token, token_header=token_header, tls=tls, printer=printer
    )
    await node.start()
    scheme = "wss" if tls else "ws"
    await run(node, f"listening on {scheme}://{host}:{node.port}", send_lines, stdin, send_every)


async def run(node: Node, where: str, send_lines: list[str], stdin: bool, send_every: float) -> None:
    """A started node until cancelled: it sends the file's lines, what is typed, and its own state."""
    name = node.name
    if send_every > 0:
        node.background = asyncio.create_task(_send_every(node, send_every))
    _print(f"[{name}] {where}; type JSON lines to send them to the bridge")
    try:
        await _send_lines(node, send_lines, "from file")
        if stdin and _in_background():
            _print(f"[{name}] in the background: not reading lines to send from the terminal")
        elif stdin:
            lines = _stdin_lines()
            while (line := await lines.get()) is not None:
                await _send_lines(node, [line], "line")
        await asyncio.Future()  # until cancelled (Ctrl-C, SIGTERM)
    finally:
        await node.close()
