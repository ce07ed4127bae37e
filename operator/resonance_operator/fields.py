"""Pure: who owns a Deployment's fields (server-side apply's managedFields).

The operator writes its Deployments with server-side apply under one field manager, so a field it
stops setting (a rollingUpdate block once the strategy is Recreate, the env and volumes of a removed
`auth` or `tls`) is removed by the next apply. Deployments made by earlier versions were created
under the Kubernetes client's default manager and only later applied: the fields set at creation
belong to that manager, and no apply of ours removes them. `adopted` moves them to ours, as
`kubectl`'s client-side-to-server-side upgrade does, so the next apply leaves nothing stale.
"""

from __future__ import annotations

from typing import Any

# The Kubernetes Python client's default field manager (from its User-Agent): what created
# Deployments before the operator created them by apply.
LEGACY_MANAGER = "OpenAPI-Generator"


def _union(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    merged = dict(a)
    for key, value in b.items():
        merged[key] = _union(merged[key], value) if isinstance(merged.get(key), dict) else value
    return merged


def _main(entry: dict[str, Any]) -> bool:
    return not entry.get("subresource")  # the status subresource is the Deployment controller's


def adopted(managed: list[dict[str, Any]], manager: str) -> list[dict[str, Any]] | None:
    """The managedFields with the legacy manager's updates merged into `manager`'s apply entry;
    None when there is nothing to adopt."""
    legacy = [
        e
        for e in managed
        if _main(e)
        and e.get("operation") == "Update"
        and str(e.get("manager", "")).startswith(LEGACY_MANAGER)
    ]
    if not legacy:
        return None
    ours = [e for e in managed if _main(e) and e.get("operation") == "Apply" and e.get("manager") == manager]
    owned: dict[str, Any] = {}
    for entry in ours + legacy:
        owned = _union(owned, entry.get("fieldsV1") or {})
    base = ours[0] if ours else legacy[0]
    entry = {
        "manager": manager,
        "operation": "Apply",
        "apiVersion": base.get("apiVersion", "apps/v1"),
        "time": base.get("time"),
        "fieldsType": "FieldsV1",
        "fieldsV1": owned,
    }
    return [e for e in managed if e not in legacy and e not in ours] + [entry]
