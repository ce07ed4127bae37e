"""Pure: how a bridge reaches its node, as bridge variables: it dials `endpoint`, or `endpoints` (a
primary and its standbys, README "A standby endpoint"), or it listens (`listen`; listening.py makes
the Service in front of it)."""

from __future__ import annotations

from .model import NodeSpec


def listening(spec: NodeSpec) -> dict[str, str]:
    listen = spec.listen
    if listen is None:
        return {}
    return {
        "RESONANCE_LISTEN": f"0.0.0.0:{listen.port}",
        "RESONANCE_LISTEN_PATH": listen.path,
        "RESONANCE_LISTEN_ANONYMOUS": "true" if listen.anonymous else "false",
        "RESONANCE_LISTEN_ALLOWED_ORIGINS": ",".join(listen.allowed_origins),
    }


def dialling(spec: NodeSpec) -> dict[str, str]:
    if not spec.endpoints:
        return {"RESONANCE_ENDPOINT": spec.endpoint} if spec.endpoint else {}
    failover = spec.failover
    return {
        "RESONANCE_ENDPOINT": spec.endpoints[0],
        "RESONANCE_STANDBY_ENDPOINTS": ",".join(spec.endpoints[1:]),
        "RESONANCE_FAILOVER_ATTEMPTS": str(failover.attempts),
        "RESONANCE_FAILBACK_AFTER_S": str(failover.failback_after_seconds),
    }


def dialled(spec: NodeSpec) -> list[str]:
    """The URLs the bridge may dial, primary first."""
    return list(spec.endpoints or ([spec.endpoint] if spec.endpoint else []))
