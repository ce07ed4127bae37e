"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it: run several
operator replicas, exactly one acts.

Why a Lease and not kopf's peering: kopf's peering is a guard against conflicting operators, not a
failover; operators of the same priority all freeze. A Lease is the Kubernetes standard (kube-scheduler
and controller-manager use one), needs one namespaced object and a Role, and `kubectl get lease` shows
the holder.

The rules (times from Election): a candidate takes the Lease when it is free, or when its record has not
changed for `lease_s` by the candidate's own clock (so clock skew between nodes cannot matter); the
leader renews every `retry_s`, and if it could not renew for `renew_deadline_s` (< lease_s) it exits at
once, before any candidate may take over: two leaders never act at the same time. A leader that stops
cleanly releases the Lease, so its successor takes over within `retry_s`.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .storage import Kube, KubeError

log = logging.getLogger("resonance.operator.leader")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # a MicroTime


def identity() -> str:
    """The pod's name (set from the downward API by the chart) and a random suffix: a restarted
    process is a new candidate, never mistaken for the old holder."""
    return f"{os.environ.get('RESONANCE_POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass
class Election:
    kube: Kube
    namespace: str
    name: str
    me: str
    lease_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_s: float = 2.0

    def __post_init__(self) -> None:
        self.seen: tuple[Any, ...] | None = None  # the Lease record as last read
        self.seen_at = 0.0  # when it last changed, by our monotonic clock
        self.holder = ""  # who holds it, as last read

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True if we hold the Lease now."""
        lease = await self.kube.get_lease(self.namespace, self.name)
        spec = (lease or {}).get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self.seen:
            self.seen, self.seen_at, self.holder = record, time.monotonic(), holder
        expired = time.monotonic() - self.seen_at > float(spec.get("leaseDurationSeconds") or self.lease_s)
        if holder and holder != self.me and not expired:
            return False
        now = _now()
        transitions = int(spec.get("leaseTransitions") or 0) + (holder != self.me and lease is not None)
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.me,
                "leaseDurationSeconds": int(self.lease_s),
                "acquireTime": spec.get("acquireTime") if holder == self.me else now,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }
        if lease is not None:
            body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
        written = await self.kube.write_lease(body)
        if written is None:
            return False  # another candidate wrote first
        new = written["spec"]
        self.seen = (self.me, new.get("renewTime"), new.get("leaseTransitions"))
        self.seen_at, self.holder = time.monotonic(), self.me
        return True

    async def _attempt(self) -> bool:
        try:
            return await asyncio.wait_for(self.try_acquire_or_renew(), self.retry_s * 2)
        except (KubeError, OSError, TimeoutError) as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return False

    async def acquire(self) -> None:
        """Wait until we lead."""
        log.info("waiting to lead: lease %s/%s, as %s", self.namespace, self.name, self.me)
        said = ""
        while not await self._attempt():
            if self.holder != said:
                log.info("standing by: %s leads", self.holder or "nobody")
                said = self.holder
            await asyncio.sleep(self.retry_s)
        log.info("leading: lease %s/%s acquired as %s", self.namespace, self.name, self.me)

    async def hold(self) -> None:
        """Renew until cancelled; return only when the Lease could not be renewed in time."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.retry_s)
            if await self._attempt():
                renewed = time.monotonic()
            elif time.monotonic() - renewed > self.renew_deadline_s or self.holder not in ("", self.me):
                log.critical("lost the lease %s/%s (held by %s)", self.namespace, self.name, self.holder)
                return

    async def release(self) -> None:
        """Hand the Lease over at once, on a clean stop (a successor need not wait for it to expire)."""
        lease = await self.kube.get_lease(self.namespace, self.name)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.me:
            return
        lease["spec"].update(holderIdentity="", leaseDurationSeconds=1, renewTime=_now())
        await self.kube.write_lease(lease)
        log.info("released the lease %s/%s", self.namespace, self.name)


async def standby_health(port: int, election: Election) -> web.AppRunner:
    """/healthz while standing by (kopf serves it once leading): a standby is alive, not failing."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text=f"standby: {election.holder or 'nobody'} leads\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
