#!/usr/bin/env bash
# Delete the kind cluster of kind-up.
set -euo pipefail
command -v kind >/dev/null 2>&1 || { echo "kind-down: kind is not installed" >&2; exit 1; }
kind delete cluster --name "${KIND_CLUSTER:-resonance}"
