"""The child processes of `resonance up`: started detached, stopped in order, their ports checked first.

Every child (the broker too) runs in a session of its own, so a terminal's Ctrl-C reaches `up` alone,
which then stops the bridges first (they drain and commit), then the nodes, then the broker; and every
child dies with `up` (PR_SET_PDEATHSIG), so a killed `up` leaves nothing listening on 9092.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .manifests import LocalNode


@dataclass
class Running:
    nodes: list[LocalNode]
    logs: Path
    ports: dict[str, int] = field(default_factory=dict)  # bridge HTTP port per node
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=6))


def die_with_parent() -> None:
    """In a child: SIGTERM when the process that started it dies, however it dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def detach() -> None:
    """In the child: a session of its own (the terminal's Ctrl-C is for `up`), and die with `up`."""
    os.setsid()
    die_with_parent()


def spawn(
    running: Running, label: str, args: list[str], env: dict[str, str] | None, log: Path | None
) -> subprocess.Popen[bytes]:
    """A child process: `python -m` with args (its module first), e.g. the bridge as its pod runs it."""
    out = open(log, "ab") if log else subprocess.PIPE  # noqa: SIM115  (the child owns it)
    child = subprocess.Popen(
        [sys.executable, "-m", *args],
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=detach,
    )
    running.children.append((label, child))
    return child


def stop_all(running: Running, force: bool) -> None:
    """Bridges first (they drain and commit), then nodes; each group at once. The broker is the caller's."""
    for kind in ("bridge", "node"):
        group = [
            child for label, child in running.children if label.startswith(kind) and child.poll() is None
        ]
        for child in group:
            child.send_signal(signal.SIGKILL if force else signal.SIGTERM)
        for child in group:
            try:
                child.wait(0.5 if force else 20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def busy(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def leftover_broker(port: int) -> int | None:
    """The pid of an embedded broker (tansu) listening on port, if one is running: most often one that
    an earlier `resonance up` or `resonance broker` left behind."""
    marker = f"tcp://127.0.0.1:{port}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes()
            if b"tansu" in cmdline and marker in cmdline:
                return int(proc.name)
    return None


def running_owner(pid: int) -> tuple[int, str] | None:
    """The live `resonance up` or `resonance broker` that started process pid, if one did: its
    broker is in use, not left behind."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = (Path("/proc") / str(pid) / "stat").read_text()
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        words = (Path("/proc") / str(parent) / "cmdline").read_bytes().split(b"\0")
        if any(w.endswith((b"resonance", b"resonance_local")) for w in words):
            command = next((w.decode() for w in words if w in (b"up", b"broker")), "")
            if command:
                return parent, f"resonance {command}"
    return None


def port_problem(
    nodes: list[LocalNode], broker_port: int | None, with_nodes: bool, http_port_base: int
) -> str | None:
    """The first port `up` needs that is taken, said with what to change; None if all are free."""
    wanted: list[tuple[int, str]] = []
    if broker_port is not None:
        wanted.append((broker_port, "the embedded broker: change it with --broker-port or use an existing "
                                    "Kafka via KAFKA_BOOTSTRAP_SERVERS"))  # fmt: skip
    if with_nodes:
        wanted += [
            (n.port, f"node {n.name}: change the port in {n.source} or pass --no-nodes") for n in nodes
        ]
    wanted += [
        (http_port_base + i, f"the bridge of {n.name}: change it with --http-port-base")
        for i, n in enumerate(nodes)
    ]
    for port, what in wanted:
        if not busy(port):
            continue
        pid = leftover_broker(port)
        if pid is not None and (owner := running_owner(pid)) is not None:
            return (
                f"resonance up: port {port} is in use by the embedded broker of a running `{owner[1]}` "
                f"(pid {owner[0]}): stop that one first (Ctrl-C in its terminal), or {what.split(': ', 1)[1]}"
            )
        if pid is not None:
            return (
                f"resonance up: port {port} is in use by an embedded broker left running (pid {pid}): "
                f"stop it with `kill {pid}`, or {what.split(': ', 1)[1]}"
            )
        return f"resonance up: port {port} is in use ({what})"
    return None
