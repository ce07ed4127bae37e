"""Pure: what an administrator allows a node's author to do, checked before anything is built.

A node's bridge presents the node's credentials (a token, a client certificate, a SASL password) to
the endpoint and to the Kafka the node names; whoever may write a ResonanceNode chooses both. The
chart's allow-lists (nodes.allowedEndpoints, nodes.allowedBootstrapServers) bound where that can be,
and the operator refuses a node outside them: this holds where no admission policy runs.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from . import links, podpolicy
from .model import Node
from .settings import Settings

DEFAULT_PORTS = {"ws": 80, "wss": 443}


def _split(pattern: str) -> tuple[str, str | None]:
    """`host`, `host:port`, `[v6]` or `[v6]:port` -> (host, port or None); a bare IPv6 address has none."""
    if pattern.startswith("["):
        host, _, rest = pattern[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    if pattern.count(":") == 1:
        host, port = pattern.split(":")
        return host, port
    return pattern, None


def matches(host: str, port: int | None, patterns: tuple[str, ...]) -> bool:
    """A pattern is a host glob (`*.nodes.example.com`), optionally with a port glob
    (`kafka-*.kafka.svc:9093`); hosts compare case-insensitively, as DNS does."""
    for pattern in patterns:
        want_host, want_port = _split(pattern.lower())
        if fnmatchcase(host.lower(), want_host) and (
            want_port is None or (port is not None and fnmatchcase(str(port), want_port))
        ):
            return True
    return False


def endpoint(value: str, allowed: tuple[str, ...], field: str = "spec.endpoint") -> str | None:
    """Why spec.endpoint (or one of spec.endpoints) is not allowed, or None."""
    if not allowed:
        return None
    parts = urlsplit(value)
    host = parts.hostname or ""
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        port = None
    if matches(host, port, allowed):
        return None
    return (
        f"{field}: host {host}:{port} is not in the operator's allowed endpoints "
        f"({', '.join(allowed)}): use an allowed endpoint, or ask an administrator to add it to the "
        "chart value nodes.allowedEndpoints"
    )


def bootstrap(value: str | None, default: str, allowed: tuple[str, ...]) -> str | None:
    """Why spec.kafka.bootstrapServers is not allowed, or None; the operator's own default Kafka is."""
    if not allowed or value is None or value == default:
        return None
    refused = []
    for server in value.split(","):
        host, _, port = server.strip().rpartition(":")
        if not matches(host.strip("[]"), int(port) if port.isdigit() else None, allowed):
            refused.append(server.strip())
    if not refused:
        return None
    return (
        f"spec.kafka.bootstrapServers: {', '.join(refused)} not in the operator's allowed bootstrap "
        f"servers ({', '.join(allowed)}): leave bootstrapServers unset for the default Kafka, or ask an "
        "administrator to add yours to the chart value nodes.allowedBootstrapServers"
    )


def exposed_host(node: Node, allowed: tuple[str, ...]) -> str | None:
    """Why a listening node's Ingress or HTTPRoute host is not allowed, or None. A host is routed for
    the whole cluster: a node that could name any host could take another team's traffic, so an empty
    list allows none. `{namespace}` in a pattern is the node's namespace."""
    listen = node.spec.listen
    exposure = None if listen is None else listen.ingress or listen.http_route
    if listen is None or exposure is None:
        return None
    field = "spec.listen.ingress.host" if listen.ingress else "spec.listen.httpRoute.host"
    patterns = tuple(p.replace("{namespace}", node.namespace) for p in allowed)
    if matches(exposure.host, None, patterns):
        return None
    return (
        f"{field}: {exposure.host} is not in the operator's allowed hosts "
        f"({', '.join(patterns) or 'none'}): use an allowed host, or ask an administrator to add it "
        "to the chart value nodes.allowedIngressHosts"
    )


def problems(node: Node, settings: Settings) -> list[str]:
    """Everything about the node that the operator's settings do not allow, each naming the field."""
    spec = node.spec
    found = [
        *(
            endpoint(
                url, settings.allowed_endpoints, f"spec.endpoints[{i}]" if spec.endpoints else "spec.endpoint"
            )
            for i, url in enumerate(links.dialled(spec))
        ),
        bootstrap(
            spec.kafka.bootstrap_servers if spec.kafka else None,
            settings.kafka_bootstrap_servers,
            settings.allowed_bootstrap_servers,
        ),
        exposed_host(node, settings.allowed_ingress_hosts),
    ]
    return [problem for problem in found if problem is not None] + podpolicy.problems(spec, settings)
