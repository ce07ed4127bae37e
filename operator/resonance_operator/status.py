"""Pure: the node's status from its Deployment and its bridge's heartbeats, with conditions in the
standard Kubernetes shape.

Ready = the Deployment is ready (ready replicas >= desired, its latest generation observed) AND the
bridge's WebSocket is connected AND its heartbeats are fresh (health.py); its reason and message name
the missing part. Progressing and Degraded say what the Deployment is doing, KafkaConnected,
WebSocketConnected and HeartbeatFresh what the data plane is doing, in words a user can act on.
A condition's lastTransitionTime changes only when its status does (kubebuilder's convention).
"""

from __future__ import annotations

from typing import Any

from . import health, links
from .builders import deployment_name, selector
from .model import Node

Condition = dict[str, Any]


def _condition(type_: str, ok: bool, reason: str, message: str) -> Condition:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason, "message": message}


def _deployment_failure(deployment: dict[str, Any]) -> str | None:
    for cond in deployment.get("status", {}).get("conditions") or ():
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return f"the bridge rollout stalled: {cond.get('message', 'progress deadline exceeded')}"
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return f"bridge pods cannot be created: {cond.get('message', '')}"
    return None


# What happens next, after a reconcile that failed (KubeError) or was refused (service.Refused).
NEXT = {
    "ReconcileFailed": "the operator retries",
    "Conflict": "nothing is written; the operator checks again every 30s",
    "NotAllowed": "nothing is written; the operator acts once the spec is changed",
}


def conditions(
    node: Node, deployment: dict[str, Any] | None, error: str | None, reason: str = "ReconcileFailed"
) -> list[Condition]:
    name = deployment_name(node.name)
    if error is not None:
        return [
            _condition("Ready", False, reason, error),
            _condition("Progressing", False, reason, error),
            _condition("Degraded", True, reason, f"{error}; {NEXT[reason]}"),
        ]
    if deployment is None:
        return [
            _condition("Ready", False, "DeploymentMissing", f"Deployment {name} does not exist yet"),
            _condition("Progressing", True, "Creating", f"creating Deployment {name}"),
            _condition("Degraded", False, "AsExpected", "no problem seen"),
        ]
    if node.spec.paused:
        msg = "spec.paused is true: the bridge is scaled to 0; set paused: false to resume relaying"
        return [
            _condition("Ready", False, "Paused", msg),
            _condition("Progressing", False, "Paused", msg),
            _condition("Degraded", False, "Paused", msg),
        ]
    status = deployment.get("status") or {}
    desired = node.spec.replicas
    ready = status.get("readyReplicas") or 0
    updated = status.get("updatedReplicas") or 0
    observed = (status.get("observedGeneration") or 0) >= deployment["metadata"].get("generation", 1)
    failure = _deployment_failure(deployment)
    degraded = _condition(
        "Degraded",
        failure is not None,
        "DeploymentFailing" if failure else "AsExpected",
        failure or "no problem seen",
    )
    if desired == 0:
        msg = "spec.replicas is 0: no bridge runs; scale up to relay"
        return [
            _condition("Ready", False, "ScaledToZero", msg),
            _condition("Progressing", False, "ScaledToZero", msg),
            degraded,
        ]
    is_ready = observed and ready >= desired
    if is_ready:
        ready_cond = _condition("Ready", True, "BridgeReady", f"{ready}/{desired} bridge replicas ready")
    else:
        waiting = (
            "the Deployment controller has not observed the latest spec"
            if not observed
            else (f"{ready}/{desired} bridge replicas ready; see `kubectl describe deployment {name}`")
        )
        ready_cond = _condition("Ready", False, "BridgeNotReady", waiting)
    rolled = observed and updated >= desired and ready >= desired
    progressing = _condition(
        "Progressing",
        not rolled,
        "RollingOut" if not rolled else "RolledOut",
        f"{updated}/{desired} replicas updated, {ready} ready"
        if not rolled
        else "the bridge runs the latest spec",
    )
    return [ready_cond, progressing, degraded]


def merge(previous: list[Condition], new: list[Condition], generation: int, now: str) -> list[Condition]:
    """Carry lastTransitionTime over from the previous condition of a type whose status is unchanged."""
    before = {c.get("type"): c for c in previous}
    merged = []
    for cond in new:
        old = before.get(cond["type"])
        since = old["lastTransitionTime"] if old and old.get("status") == cond["status"] else now
        merged.append({**cond, "lastTransitionTime": since, "observedGeneration": generation})
    return merged


def _ready(deployed: Condition, data_plane: list[Condition]) -> Condition:
    """Ready needs the Deployment and the data plane; the most telling missing part gives reason and
    message. Bridge pods that run but are not ready say less than the heartbeat saying why (their
    readiness probe fails when the node or Kafka is unreachable), so that reason goes first."""
    if deployed["status"] != "True" and deployed["reason"] != "BridgeNotReady":
        return deployed  # paused, scaled to zero, missing, failing to reconcile, rolling out
    state = {c["type"]: c for c in data_plane}
    explaining = ("HeartbeatFresh", "WebSocketConnected") + (
        ("KafkaConnected",) if deployed["status"] != "True" else ()
    )
    if state["BatchesDecodable"]["reason"] == "PartitionStopped":  # the spec asked for this to count
        explaining = ("BatchesDecodable", *explaining)
    for part in explaining:  # a bridge never heard from says nothing the Deployment does not say better
        if state[part]["status"] == "False" and state[part]["reason"] != "NoHeartbeatYet":
            return _condition("Ready", False, state[part]["reason"], state[part]["message"])
    if deployed["status"] != "True":
        return deployed
    if state["HeartbeatFresh"]["status"] != "True":
        return _condition(
            "Ready", False, state["HeartbeatFresh"]["reason"], state["HeartbeatFresh"]["message"]
        )
    return _condition("Ready", True, "BridgeReady", f"{deployed['message']}; connected, heartbeats arrive")


def where(node: Node) -> str:
    """The node's URL, or where its bridge listens for it."""
    listen = node.spec.listen
    if listen is None:
        primary, *standbys = links.dialled(node.spec) or [""]
        return f"{primary} (standby: {', '.join(standbys)})" if standbys else primary
    return f"the bridge listens on port {listen.port}, path {listen.path}"


def node_status(
    node: Node,
    deployment: dict[str, Any] | None,
    previous: dict[str, Any],
    now: str,
    error: str | None = None,
    beat: health.Beat | None = None,
    clock: float = 0.0,
    reason: str = "ReconcileFailed",
    handled: int | None = None,
    replay: tuple[str, str | None] | None = None,
) -> dict[str, Any]:
    """The whole status; `clock` is the monotonic time the beat's age is measured against; `reason`
    is the error's (status.NEXT); `handled` the last generation carried out (or refused for good),
    the node's own when not given. kopf reads it to tell a spec handled (diffbase.py)."""
    deployed, *rest = conditions(node, deployment, error, reason)
    data_plane = health.conditions(beat, clock, node.spec.frequency_hz, where(node))
    new = [_ready(deployed, data_plane), *rest, *data_plane]
    if node.spec.latency_objective_ms is not None:
        new.append(health.late(beat, node.spec.latency_objective_ms))
    replayed, replaying = _replay(replay, beat)
    if replaying is not None:
        new.append(replaying)
    dep_status = (deployment or {}).get("status") or {}
    status: dict[str, Any] = {
        "observedGeneration": node.generation if handled is None else handled,
        "deployment": deployment_name(node.name),
        "replicas": dep_status.get("replicas") or 0,  # observed, as the scale subresource means it
        "readyReplicas": dep_status.get("readyReplicas") or 0,
        "selector": selector(node.name),
        "conditions": merge(previous.get("conditions") or [], new, node.generation, now),
    }
    if beat is not None:
        status["lastHeartbeatTime"] = beat.time
        status["bridge"] = beat.bridge
    if replayed is not None:
        status["replay"] = replayed
    return status


def _replay(asked: tuple[str, str | None] | None, beat: health.Beat | None) -> tuple[Any, Condition | None]:
    """status.replay and the Replay condition (not part of Ready): the request, as the operator decided
    it (replays.py), and how far the bridge is with it. No counts in the message: one that changed
    every beat would be a status patch every beat."""
    if asked is None:
        return None, None
    value, why = asked
    said = beat.replay if beat is not None and beat.replay and beat.replay["value"] == value else {}
    replay = {"requested": value, **{k: v for k, v in said.items() if k != "value"}}
    if why is not None:
        replay["error"] = why
    if replay.get("error"):
        return replay, _condition("Replay", False, "Refused", replay["error"])
    if replay.get("completedAt"):
        done = f"replayed from {value}; completed at {replay['completedAt']}"
        return replay, _condition("Replay", True, "Completed", done)
    if replay.get("startedAt"):
        return replay, _condition("Replay", True, "Replaying", f"replaying from {value}")
    waiting = f"the bridge has not taken up the replay from {value} yet (its file follows within a minute)"
    return replay, {"type": "Replay", "status": "Unknown", "reason": "Requested", "message": waiting}


def endpoint(status: dict[str, Any]) -> str | None:
    """The endpoint the bridge dials now, as its last heartbeat said."""
    return (status.get("bridge") or {}).get("endpoint")


def announcements(old: dict[str, Any], new: dict[str, Any], ever_ready: bool) -> list[tuple[str, str, str]]:
    """The Events (type, reason, message) a status change calls for: Ready's transitions, and a new
    reason while not Ready (the Deployment's probe often says "not ready" a moment before the
    heartbeat says why); and the bridge moving to a standby endpoint, or back to the primary."""
    said = []
    before, after = states(old).get("Ready"), states(new).get("Ready")
    if after is not None and before != after:
        ready = next(c for c in new["conditions"] if c["type"] == "Ready")
        message = f"{ready['reason']}: {ready['message']}"
        if after[0] == "True":
            said.append(("Normal", "Ready", message))
        elif after[1] == "WaitingForNode":  # a listening node went away: a state, not a failure
            said.append(("Normal", "WaitingForNode", message))
        elif before is not None and ever_ready:  # not ready yet, as a new node is, is no news
            said.append(("Warning", "NotReady", message))
    said += _replayed(old.get("replay") or {}, new.get("replay") or {})
    was, now = endpoint(old), endpoint(new)
    if was and now and was != now:
        if not (new.get("bridge") or {}).get("standby"):
            said.append(("Normal", "EndpointRestored", f"the bridge is back on its primary endpoint {now}"))
        else:
            said.append(("Warning", "EndpointFailover", f"the bridge moved from {was} to the standby {now}"))
    return said


def _replayed(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, str]]:
    """ReplayStarted, ReplayCompleted and ReplayRefused, each once per requested value."""
    value, again = new.get("requested"), old.get("requested") == new.get("requested")
    said = []
    if new.get("error") and not (again and old.get("error") == new["error"]):
        said.append(("Warning", "ReplayRefused", new["error"]))
    if new.get("startedAt") and not (again and old.get("startedAt")):
        parts = ", ".join(f"{p}: {o['from']}-{o['until']}" for p, o in (new.get("partitions") or {}).items())
        said.append(("Normal", "ReplayStarted", f"replaying from {value} (partition: offsets {parts})"))
    if new.get("completedAt") and not (again and old.get("completedAt")):
        done = f"replayed {new.get('replayed', 0)} records from {value}"
        said.append(("Normal", "ReplayCompleted", done))
    return said


def states(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each condition's (status, reason): what changing counts as a transition."""
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or ()}


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether a status patch would change anything (ignoring timestamps that merge() preserved)."""
    return all(b.get(key) == value for key, value in a.items())
