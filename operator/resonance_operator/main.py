"""`resonance operator`: run the kopf operator with the settings from the environment."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Coroutine, Mapping
from pathlib import Path

import kopf
from resonance_bridge.config import ConfigError

from . import (
    handlers,  # noqa: F401  (registers the handlers)
    leader,
)
from .settings import Settings, load
from .storage import Kube

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def missing_credentials(env: Mapping[str, str]) -> str | None:
    """Why there is no API server to talk to, or None. Checked first: kopf would retry forever."""
    if env.get("KUBERNETES_SERVICE_HOST") and SERVICE_ACCOUNT.exists():
        return None  # in a pod, with its service account
    configs = [Path(p) for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if any(p.is_file() for p in configs or [Path.home() / ".kube" / "config"]):
        return None
    named = f"KUBECONFIG={env['KUBECONFIG']!r} names no file" if configs else "no ~/.kube/config"
    return f"no Kubernetes credentials ({named}): point KUBECONFIG at a kubeconfig, or run it in a cluster"


def taken_ports(settings: Settings) -> list[str]:
    """The operator's ports another process holds: said before kopf starts, which would fail late,
    with a traceback."""
    taken = []
    for variable, port in (
        ("RESONANCE_OPERATOR_LIVENESS_PORT", settings.liveness_port),
        ("RESONANCE_OPERATOR_METRICS_PORT", settings.metrics_port),
    ):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", port))
            except OSError as exc:
                taken.append(f"{variable}={port} cannot be used ({exc.strerror}): choose a free port")
    return taken


def run() -> int:
    try:
        settings = load(os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"resonance operator: {problem}", file=sys.stderr)
        return 2
    missing = missing_credentials(os.environ)
    if missing:
        print(f"resonance operator: {missing}", file=sys.stderr)
        return 2
    for taken in taken_ports(settings):
        print(f"resonance operator: {taken}", file=sys.stderr)
        return 2
    return asyncio.run(_main(settings))


async def _main(settings: Settings) -> int:
    namespaces = list(settings.watch_namespaces)

    def operator() -> Coroutine[None, None, None]:
        return kopf.operator(
            memo=kopf.Memo(settings=settings),  # the handlers' state (handlers.py)
            standalone=True,  # not kopf's peering: leader.py says why
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz",
        )

    if not settings.leader_election:
        await operator()
        return 0
    kube = await Kube.connect()
    election = leader.Election(kube, settings.lease_namespace, settings.lease_name, leader.identity())
    standby = await leader.standby_health(settings.liveness_port, election)
    try:
        await election.acquire()
    finally:
        await standby.cleanup()
    acting, holding = asyncio.ensure_future(operator()), asyncio.ensure_future(election.hold())
    await asyncio.wait({acting, holding}, return_when=asyncio.FIRST_COMPLETED)
    if holding.done():
        # Exit at once, as client-go's elector does: the next leader may start any moment now.
        os._exit(1)
    holding.cancel()
    try:
        await election.release()  # a clean stop (SIGTERM): the successor takes over at once
    finally:
        await kube.close()
    acting.result()  # kopf's own failure, if it failed
    return 0
