"""kopf's record of the last handled spec, kept as a digest so that it fits in an annotation.

kopf keeps the whole spec it last handled in an annotation, to tell what changed. Annotations may
hold 256 KiB in all, and a spec may be larger (the API server takes objects of up to 1.5 MiB):
past that, kopf could not record the spec and handled it again and again. The operator reconciles
from the whole object whatever changed, so the digest of the spec is all it needs: the same digest
means nothing changed; another means the spec changed. A whole essence left by an earlier version
is read as it is.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, cast

import kopf


def digest(essence: Any) -> str:
    """Of the spec: the only part of a node the operator's handlers act on (labels, annotations and
    kopf's own bookkeeping there are not a change)."""
    spec = essence.get("spec") if isinstance(essence, dict) else None
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        record = json.dumps({"sha256": digest(essence)}) + "\n"
        for key in self.make_keys(self.key, body=body):
            patch.metadata.annotations[key] = record
        self._store_marker(prefix=self.prefix, patch=patch, body=body)

    def fetch(self, *, body: kopf.Body) -> Any:
        old: Any = super().fetch(body=body)
        if not isinstance(old, dict) or set(old) != {"sha256"}:
            return old  # none yet, or an earlier version's whole essence
        current = cast(dict[str, Any], self.build(body=body))
        if digest(current) == old["sha256"]:
            return current  # unchanged: kopf finds no difference
        return {**current, "spec": {"changed from": old["sha256"]}}  # a change of the spec
