"""kopf's record of the last handled spec, kept where the operator writes anyway: the node's status.

kopf keeps the whole spec it last handled in an annotation, to tell what changed: one more PATCH of
every node after each handling (besides the status patch), and a spec past the annotations' 256 KiB
could not be recorded at all, so it was handled again and again. The operator reconciles from the
whole object whatever changed, so all it needs is whether the spec changed since it was last
carried out, and `status.observedGeneration` says that (the API server moves `metadata.generation`
with every change of the spec, and of nothing else): equal, nothing to do; behind, an update. The
monitor writes it once a reconcile is done, or refused until the spec changes (monitor.py), and not
while one is retried. A node with no generation handled yet is new to kopf, or one left by an
earlier version: its annotation (a digest, or a whole essence) is read as it is.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, cast

import kopf


def digest(essence: Any) -> str:
    """Of the spec: what an earlier version recorded in its annotation."""
    spec = essence.get("spec") if isinstance(essence, dict) else None
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class GenerationDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        pass  # the status patch after the reconcile records it (observedGeneration)

    def fetch(self, *, body: kopf.Body) -> Any:
        handled = (body.get("status") or {}).get("observedGeneration") or 0
        current = cast(dict[str, Any], self.build(body=body))
        if handled >= (body.metadata.get("generation") or 0) > 0:
            return current  # unchanged: kopf finds no difference
        if handled:
            return {**current, "spec": {"changed since generation": handled}}  # an update
        old: Any = super().fetch(body=body)
        if not isinstance(old, dict) or set(old) != {"sha256"}:
            return old  # none yet (a new node), or an earlier version's whole essence
        return current if digest(current) == old["sha256"] else {**current, "spec": {"changed from": old}}


class QuietProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's record of handlers being retried, in annotations, without kopf's `kopf-managed` marker
    annotation: one more PATCH of every new node. The marker keeps other kopf operators from taking
    our annotations for changes and answering with their own, back and forth; here our annotations
    exist only while a handler is retried, and our changes are told by metadata.generation, which
    no annotation moves: there is no back and forth to prevent."""

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        pass
