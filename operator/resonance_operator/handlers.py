"""kopf handlers: thin. Each one hands a node to service.reconcile and reports the outcome.

`kopf run -m resonance_operator.handlers` works as well as `resonance operator`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf
from resonance_bridge import logs

from . import GROUP, PLURAL, VERSION, metrics, replays, service
from .bridgewatch import BridgeWatch
from .diffbase import GenerationDiffBaseStorage, QuietProgressStorage
from .model import REPLAY_ANNOTATION, Node
from .monitor import Monitor
from .settings import Settings, load
from .storage import Kube, KubeError

log = logging.getLogger("resonance.operator")
# The operator's state is kopf's memo: `settings` (loaded once by main.run, or here under `kopf run`)
# and `kube`, the one API client, created at startup and closed at cleanup.


@kopf.on.startup()
async def startup_fn(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    if "settings" not in memo:  # `kopf run -m resonance_operator.handlers`: no main loaded them
        memo.settings = load(os.environ)
    logs.install()  # done by logs.setup() already, but not under `kopf run`, which configures its own
    ours: Settings = memo.settings
    memo.kube = await Kube.connect()
    memo.monitor = Monitor(memo.kube, memo.settings)
    memo.replays = {}  # each node's replay annotation as last carried into its ConfigMap
    memo.monitor.start()
    memo.bridges = BridgeWatch(memo.kube, ours.watch_namespaces, functools.partial(bridge_changed, memo))
    memo.bridges.start()
    try:
        metrics.serve(ours.metrics_port, memo.monitor.statuses)
    except ValueError:
        pass  # already serving: `kopf run` reloaded the module
    except OSError as exc:  # the operator still does its job; say why it cannot be watched
        logger.error(
            "metrics not served: RESONANCE_OPERATOR_METRICS_PORT=%d cannot be used (%s)",
            ours.metrics_port,
            exc,
        )
    # A watch the server silently stopped feeding is replaced: the server ends each watch after
    # server_timeout, and the client gives up on one that says nothing for client_timeout.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # kopf's bookkeeping goes to annotations, so that status is ours alone (and its schema strict);
    # the spec it last handled is the status' observedGeneration, so that no request records it (diffbase.py).
    settings.persistence.progress_storage = QuietProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = GenerationDiffBaseStorage(prefix=GROUP)
    # Our Events (storage.post_event) say what happened; kopf's own, for every handler run, add noise.
    settings.posting.level = logging.WARNING
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]
    # kopf runs a worker per object, without limit: 1,000 nodes created at once meant ~2,000
    # workers and ~160 API connections (RSS 250 MB). 50 keep the API server as busy as it can be
    # here; an idle worker frees its slot after 0.5 s, not kopf's 5 s, or creates crawl at ~6/s
    # (bench/RESULTS.md, "Operator at scale").
    settings.queueing.worker_limit = 50
    settings.queueing.idle_timeout = 0.5
    logger.info(
        "bridge image %s, default Kafka %s, namespaces %s",
        ours.bridge_image,
        ours.kafka_bootstrap_servers,
        ",".join(ours.watch_namespaces) or "all",
    )


@kopf.on.cleanup()
async def cleanup_fn(memo: kopf.Memo, **_: Any) -> None:
    await memo.bridges.stop()
    await memo.monitor.stop()
    await memo.kube.close()


async def _reconcile(body: Mapping[str, Any], memo: kopf.Memo, handler: str) -> service.Outcome:
    kube: Kube = memo.kube
    monitor: Monitor = memo.monitor
    node = dict(body)
    try:
        with memo.bridges.reconciling(node["metadata"]["namespace"], node["metadata"]["name"]):
            outcome = await service.reconcile(kube, Node.from_body(node), memo.settings)
        metrics.RECONCILES.labels(handler, "ok").inc()
    except service.Refused as exc:
        metrics.RECONCILES.labels(handler, "refused").inc()
        known = monitor.nodes.get((node["metadata"]["namespace"], node["metadata"]["name"]))
        if known is None or known.error != str(exc):  # said once, not at every retry
            with contextlib.suppress(KubeError):
                await kube.post_event(node, "Warning", exc.reason, str(exc))
        await monitor.observe(node, None, str(exc), exc.reason)
        if exc.reason == "Conflict":  # the object in the way may go (garbage collection, a person)
            raise kopf.TemporaryError(str(exc), delay=30) from exc
        raise kopf.PermanentError(str(exc)) from exc  # a spec change is what can fix it
    except KubeError as exc:
        metrics.RECONCILES.labels(handler, "error").inc()
        await monitor.observe(node, None, str(exc))
        with contextlib.suppress(KubeError):
            await kube.post_event(node, "Warning", "ReconcileFailed", f"{exc}; the operator retries")
        raise kopf.TemporaryError(str(exc), delay=10) from exc
    # Observed first: an event of the Deployment just written that arrives while the Event is posted
    # is then known as the operator's own, not taken for an edit to reconcile again (3 more calls).
    await monitor.observe(node, outcome.deployment)
    if outcome.action != "unchanged":
        with contextlib.suppress(KubeError):  # an Event lost is a pity, not a reason to fail the node
            await kube.post_event(node, "Normal", outcome.action.capitalize(), outcome.message)
    return outcome


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile_fn(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    outcome = await _reconcile(body, memo, "node")
    logger.info(outcome.message)


async def bridge_changed(memo: kopf.Memo, kind: str, body: dict[str, Any]) -> None:
    """A bridge Deployment changed, was edited or deleted (bridgewatch.py): reconcile its node, which
    puts the Deployment back as specified and carries its readiness into the node's status. The
    change the last reconcile made and observed itself is not reconciled again, and a change of
    status alone is carried into the node's status without one."""
    meta = body.get("metadata") or {}
    owner = next(
        (
            ref["name"]
            for ref in meta.get("ownerReferences") or []
            if ref.get("kind") == "ResonanceNode" and ref.get("apiVersion", "").startswith(GROUP)
        ),
        None,
    )
    namespace = meta.get("namespace")
    if owner is None or namespace is None:
        return
    monitor: Monitor = memo.monitor
    own = (namespace, owner) in memo.bridges.busy or monitor.seen(
        namespace, owner, meta.get("resourceVersion")
    )
    if kind != "DELETED":  # a deleted one is always recreated
        if own:
            return  # its own write, which the reconcile that made it observes (or already did)
        if await monitor.deployment_changed(namespace, owner, body):
            return  # its status moved, its spec is as the node asks: no reconcile needed
    node = await memo.kube.get_node(namespace, owner)
    if node is None or node["metadata"].get("deletionTimestamp"):
        return  # the node is gone: garbage collection takes the Deployment
    try:
        outcome = await _reconcile(node, memo, "deployment")
    except (kopf.TemporaryError, kopf.PermanentError) as exc:  # said on the node (status, Event)
        log.warning("reconcile of %s/%s failed: %s", namespace, owner, exc)
        return
    if outcome.action != "unchanged":
        log.info("%s/%s: %s", namespace, owner, outcome.message)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def node_event_fn(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A node deleted: stop tracking its status (garbage collection takes its Deployment). Otherwise
    its replay annotation, when it changed, into its ConfigMap (replays.py)."""
    key = (body.metadata.namespace, body.metadata.name)
    if type == "DELETED":
        memo.monitor.forget(*key)
        memo.replays.pop(key, None)
        return
    value = body.metadata.annotations.get(REPLAY_ANNOTATION)
    if key in memo.replays and memo.replays[key] == value:
        return  # unchanged
    if key not in memo.replays and value is None:
        return  # never asked for: no look for a ConfigMap (1,000 nodes would be 1,000 requests)
    try:
        decided = await replays.carry(memo.kube, Node.from_body(body))
    except KubeError as exc:  # tried again at the node's next event (its status moves)
        log.warning("replay request of %s/%s not carried: %s", *key, exc)
        return
    memo.replays[key] = value
    await memo.monitor.replay(*key, decided)


@kopf.on.probe(id="kubernetes")
async def api_probe_fn(memo: kopf.Memo, **_: Any) -> str:
    """Part of /healthz: the operator is only alive if it can still reach the API server."""
    kube: Kube = memo.kube
    return await kube.reachable()  # raises if the API server is unreachable
