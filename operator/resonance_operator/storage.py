"""The one module that talks to the Kubernetes API (besides kopf's own watching).

Objects travel as plain dicts, exactly as the API serves them. 404 and 409 are normal outcomes
here, not errors: a missing object is None, a create that lost a race reports that it did.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from . import GROUP, PLURAL, VERSION
from .events import COMPONENT, Correlator, event_body
from .metrics import EVENTS_HELD

# The label every bridge Deployment carries: the API server filters the operator's watch by it.
BRIDGE_SELECTOR = f"app.kubernetes.io/managed-by={COMPONENT}"
FIELD_MANAGER = COMPONENT  # the Events' source has the same name
ROUTES = {"group": "gateway.networking.k8s.io", "version": "v1", "plural": "httproutes"}
# kubernetes_asyncio's session trusts the environment: aiohttp then looks for a netrc on every request,
# in a thread (a quarter of the operator's CPU under 1,000 beating nodes). Only these need it.
TRUSTED_ENV = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NETRC")


class KubeError(Exception):
    """An API call failed for a reason other than 404/409; `status` is the HTTP status."""

    def __init__(self, what: str, status: int, body: bytes | str | None, reason: str = "") -> None:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            reason = json.loads(body or "{}").get("message", reason)
        super().__init__(f"{what}: HTTP {status}: {reason}")
        self.status = status


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.events = Correlator()  # which Events are repeats, and which nodes post too many
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.leases = client.CoordinationV1Api(api)
        self.networking = client.NetworkingV1Api(api)

    @classmethod
    async def connect(cls) -> Kube:
        """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config()
        configuration = client.Configuration.get_default_copy()
        # Reconciles run 50 at a time (handlers.startup_fn): the default pool of 100 connections,
        # each with its TLS buffers, is memory spent on nothing.
        configuration.connection_pool_maxsize = 16
        api = client.ApiClient(configuration)
        if not any(map(os.environ.get, TRUSTED_ENV)):
            api.rest_client.pool_manager._trust_env = False
        return cls(api)

    async def close(self) -> None:
        await self.api.close()

    async def _json(self, what: str, call: Any, *args: Any, missing_ok: bool = True, **kwargs: Any) -> Any:
        try:
            # Raw responses: plain dicts out, and (unlike models) no exception for an error status,
            # so the status is checked here.
            response = await call(*args, _preload_content=False, **kwargs)
            status, body = response.status, await response.read()
        except ApiException as exc:
            status, body = exc.status, exc.body
        if status == 404 and missing_ok:
            return None
        if status >= 400:
            raise KubeError(what, status, body)
        return json.loads(body)

    async def reachable(self) -> str:
        """A cheap authenticated round trip (API discovery), for the liveness probe."""
        info = await self._json("get /apis", client.ApisApi(self.api).get_api_versions, missing_ok=False)
        return f"{len(info.get('groups', []))} API groups"

    def _calls(self, kind: str) -> tuple[Any, ...]:
        """read, patch and delete of the namespaced kinds the operator writes (called with keywords)."""
        if kind == "HTTPRoute":  # Gateway API: a custom resource, where the cluster has it
            calls = (
                getattr(self.custom, f"{v}_namespaced_custom_object") for v in ("get", "patch", "delete")
            )
            return tuple(partial(call, **ROUTES) for call in calls)
        apis = {"Deployment": (self.apps, "deployment"), "Ingress": (self.networking, "ingress")}
        api, kind_ = apis.get(kind, (self.core, "config_map" if kind == "ConfigMap" else "service"))
        return tuple(getattr(api, f"{verb}_namespaced_{kind_}") for verb in ("read", "patch", "delete"))

    async def get_object(self, namespace: str, name: str, kind: str = "Deployment") -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._json(
            f"get {kind} {namespace}/{name}", self._calls(kind)[0], name=name, namespace=namespace
        )
        return result

    async def delete_object(self, namespace: str, name: str, kind: str) -> None:
        """What stood in front of a listening node, once the node no longer asks for it (gone: fine)."""
        what = f"delete {kind} {namespace}/{name}"
        await self._json(what, self._calls(kind)[2], name=name, namespace=namespace)

    async def list_bridges(
        self, namespace: str | None, items: bool = True
    ) -> tuple[list[dict[str, Any]], str]:
        """The bridge Deployments (the API server filters by label), a page at a time, and the
        resourceVersion to watch from; without `items`, that version alone (one small request)."""
        found: list[dict[str, Any]] = []
        page: dict[str, Any] = {"metadata": {}}
        call, args = self._deployments(namespace)
        while True:
            token = page["metadata"].get("continue")
            page = await self._json(
                f"list bridge Deployments in {namespace or 'every namespace'}",
                call,
                *args,
                label_selector=BRIDGE_SELECTOR,
                limit=500 if items else 1,
                **({"_continue": token} if token else {}),
                missing_ok=False,
            )
            found += (page.get("items") or []) if items else []
            if not items or not page["metadata"].get("continue"):
                return found, page["metadata"]["resourceVersion"]

    def _deployments(self, namespace: str | None) -> tuple[Any, tuple[str, ...]]:
        if namespace:
            return self.apps.list_namespaced_deployment, (namespace,)
        return self.apps.list_deployment_for_all_namespaces, ()

    async def watch_bridges(
        self, namespace: str | None, version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Changes of the bridge Deployments since `version`, until the server ends the watch (about
        five minutes); a version too old raises ApiException 410 (list again)."""
        call, args = self._deployments(namespace)
        stream = watch.Watch().stream(
            call,
            *args,
            label_selector=BRIDGE_SELECTOR,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=300,
        )
        async with stream:
            async for event in stream:
                yield event["type"], event["raw_object"]

    async def create_deployment(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create, by apply (so that every field is ours from the start, and a later apply that no
        longer sets one removes it); None if someone else's writes got there first (a concurrent
        reconcile, or an object that is not ours: the caller looks)."""
        try:
            return await self.apply_object(body, force=False)
        except KubeError as exc:
            if exc.status == 409:
                return None
            raise

    async def apply_object(self, body: dict[str, Any], force: bool = True) -> dict[str, Any]:
        """Server-side apply of the fields we own (of a Deployment, or what a listening node has in
        front of it): repairs hand edits to them, removes those we no longer set, leaves the rest."""
        meta = body["metadata"]
        result: dict[str, Any] = await self._json(
            f"apply {body['kind']} {meta['namespace']}/{meta['name']}",
            self._calls(body["kind"])[1],
            name=meta["name"],
            namespace=meta["namespace"],
            body=body,
            field_manager=FIELD_MANAGER,
            force=force,
            _content_type="application/apply-patch+yaml",
            missing_ok=False,
        )
        return result

    async def own_deployment_fields(self, actual: dict[str, Any], managed: list[dict[str, Any]]) -> None:
        """Replace the Deployment's managedFields (fields.adopted), if it did not change meanwhile."""
        meta = actual["metadata"]
        patch = {"metadata": {"managedFields": managed, "resourceVersion": meta["resourceVersion"]}}
        await self._json(
            f"adopt fields of Deployment {meta['namespace']}/{meta['name']}",
            self.apps.patch_namespaced_deployment,
            *(meta["name"], meta["namespace"], patch),
            _content_type="application/merge-patch+json",
            missing_ok=False,
        )

    async def ensure_service_account(
        self, body: dict[str, Any], likely_new: bool = False
    ) -> dict[str, Any] | None:
        """Create the ServiceAccount unless it exists; the one that existed, or None if this call
        created it. `likely_new` (its Deployment does not exist either): create first, look only if
        that finds one (one request for a new node, not two)."""
        meta = body["metadata"]
        what = f"ServiceAccount {meta['namespace']}/{meta['name']}"
        read = self.core.read_namespaced_service_account
        if not likely_new and (
            found := await self._json(f"get {what}", read, meta["name"], meta["namespace"])
        ):
            return dict(found)
        try:
            create = self.core.create_namespaced_service_account
            await self._json(f"create {what}", create, meta["namespace"], body, missing_ok=False)
        except KubeError as exc:
            if exc.status == 409:  # it exists: made by a concurrent reconcile, or by someone else
                raced: dict[str, Any] | None = await self._json(
                    f"get {what}", read, meta["name"], meta["namespace"]
                )
                return raced
            raise
        return None

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._json(
            f"get Lease {namespace}/{name}", self.leases.read_namespaced_lease, name, namespace
        )
        return result

    async def write_lease(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create the Lease, or replace it if body carries a resourceVersion; None if another writer
        got there first (409: the Lease changed since it was read)."""
        meta = body["metadata"]
        what = f"write Lease {meta['namespace']}/{meta['name']}"
        try:
            if meta.get("resourceVersion"):
                result: dict[str, Any] = await self._json(
                    what, self.leases.replace_namespaced_lease, meta["name"], meta["namespace"], body,
                    missing_ok=False,
                )  # fmt: skip
            else:
                result = await self._json(
                    what, self.leases.create_namespaced_lease, meta["namespace"], body, missing_ok=False
                )
        except KubeError as exc:
            if exc.status == 409:
                return None
            raise
        return result

    async def get_node(self, namespace: str, name: str) -> dict[str, Any] | None:
        what, call = f"get ResonanceNode {namespace}/{name}", self.custom.get_namespaced_custom_object
        result: dict[str, Any] | None = await self._json(what, call, GROUP, VERSION, namespace, PLURAL, name)
        return result

    async def patch_node_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource; a node deleted meanwhile is not an error."""
        call, where = self.custom.patch_namespaced_custom_object_status, (GROUP, VERSION, namespace, PLURAL)
        what, patch = f"patch status of ResonanceNode {namespace}/{name}", {"status": status}
        await self._json(what, call, *where, name, patch, _content_type="application/merge-patch+json")

    async def post_event(self, node: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """An Event on the node, as `kubectl describe` and `kubectl get events` show them; a repeat
        raises the count of the one already posted, and a node posting too many is held back
        (events.py)."""
        meta = node["metadata"]
        now, clock = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), time.monotonic()
        key = (meta["namespace"], str(meta.get("uid")), type_, reason, message[:1024])
        repeated = self.events.repeat(key, clock)
        if repeated is not None:
            patch = {"count": repeated.count, "lastTimestamp": now}
            try:
                await self._json(
                    f"update Event {meta['namespace']}/{repeated.name}",
                    self.core.patch_namespaced_event,
                    repeated.name,
                    meta["namespace"],
                    patch,
                    _content_type="application/merge-patch+json",
                    missing_ok=False,
                )
                return
            except KubeError as exc:
                if exc.status != 404:
                    raise
                self.events.forget(key)  # expired meanwhile: post it anew
        if not self.events.allow(key[1], clock):
            EVENTS_HELD.inc()
            return
        name = f"{meta['name']}.{time.time_ns():x}"  # as client-go names them: in order
        event = event_body(meta, name, type_, reason, message[:1024], now)
        what, create = f"post Event on {meta['namespace']}/{meta['name']}", self.core.create_namespaced_event
        await self._json(what, create, meta["namespace"], event, missing_ok=False)
        self.events.record(key, name, clock)
