"""The operator's watch of its bridge Deployments, filtered by the API server.

kopf filters handlers by label only after it has listed and watched every Deployment in its
namespaces: on a large cluster that is most of the operator's memory and traffic. This watch asks
the API server for the bridges alone (a label selector), a page at a time, in each namespace the
operator watches. Each change reaches `changed`. A watch the server ends (every five minutes) goes
on from the last version seen; after an error or an expired version the bridges are listed again
and each passed to `changed`, to skip what it has seen (not at the first list: kopf resumes every
node at start).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from .storage import Kube

log = logging.getLogger("resonance.operator")

Changed = Callable[[str, dict[str, Any]], Awaitable[None]]  # (ADDED, MODIFIED or DELETED; the Deployment)


class BridgeWatch:
    def __init__(self, kube: Kube, namespaces: tuple[str, ...], changed: Changed) -> None:
        self.kube = kube
        # Names are watched one by one; patterns (kopf's `t-*`) by one watch of every namespace.
        globbed = any(c in n for n in namespaces for c in "*?[")
        self.patterns = namespaces if globbed else ()
        self.namespaces: tuple[str | None, ...] = (None,) if self.patterns or not namespaces else namespaces
        self.changed = changed
        self.tasks: list[asyncio.Task[None]] = []
        self.busy: Counter[tuple[str, str]] = Counter()  # nodes being reconciled, by how many at once

    @contextlib.contextmanager
    def reconciling(self, namespace: str, name: str) -> Iterator[None]:
        """While a reconcile of the node runs: the Deployment events it causes are its own."""
        self.busy[(namespace, name)] += 1
        try:
            yield
        finally:
            self.busy -= Counter({(namespace, name): 1})  # drops the key at zero

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._follow(namespace)) for namespace in self.namespaces]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _follow(self, namespace: str | None) -> None:
        where, delay, first = namespace or "every namespace", 1.0, True
        version: str | None = None  # where the next watch starts; None: list first
        while True:
            try:
                if version is None:
                    items, version = await self.kube.list_bridges(namespace, items=not first)
                    for item in items:
                        await self._pass("MODIFIED", item)
                    first = False
                async for kind, body in self.kube.watch_bridges(namespace, version):
                    version = (body.get("metadata") or {}).get("resourceVersion") or version
                    if kind != "BOOKMARK":
                        await self._pass(kind, body)
                delay = 1.0  # the server ended the watch (its timeout): go on from `version`
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                version = None  # list again: a version too old (410 Gone), or an API server restarted
                if getattr(exc, "status", None) == 410:
                    continue
                log.warning(
                    "watch of bridge Deployments in %s failed (%s); again in %.0fs", where, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)

    async def _pass(self, kind: str, body: dict[str, Any]) -> None:
        namespace = (body.get("metadata") or {}).get("namespace") or ""
        if self.patterns and not any(fnmatch.fnmatchcase(namespace, p) for p in self.patterns):
            return
        with contextlib.suppress(Exception):  # one bridge's trouble must not end the watch
            await self.changed(kind, body)
